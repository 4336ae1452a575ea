using System.Diagnostics;
using System.Text;
using KvAdaQuant.Engine;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Text generation on a <see cref="CudaDecoder"/>: the prompt runs position by position through the decode step
/// (every sequence of the batch gets the same prompt), then tokens are sampled on the device; sequence 0's text is
/// streamed and returned. Speeds count positions of one sequence per second.
/// </summary>
public sealed class CudaGenerator
{
    private readonly CudaDecoder _decoder;
    private readonly ITokenizer _tokenizer;

    /// <summary>Creates a generator.</summary>
    public CudaGenerator(CudaDecoder decoder, ITokenizer tokenizer)
    {
        _decoder = decoder;
        _tokenizer = tokenizer;
    }

    /// <summary>Generates up to <paramref name="maxTokens"/> tokens after <paramref name="prompt"/>.</summary>
    public GenerationResult Generate(string prompt, int maxTokens, float temperature, int topK, float topP, ulong seed, Action<string>? onText = null)
    {
        if (temperature < 0 || float.IsNaN(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), $"--temperature must be >= 0, got {temperature}");
        }

        if (topK < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(topK), $"--top-k must be >= 0, got {topK}");
        }

        if (!(topP > 0 && topP <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(topP), $"--top-p must be in (0, 1], got {topP}");
        }

        var promptTokens = _tokenizer.Encode(prompt, addBos: true);
        if (promptTokens.Count == 0)
        {
            throw new ArgumentException("the prompt has no tokens (not even BOS)");
        }

        if (promptTokens.Count > _decoder.Capacity)
        {
            throw new ArgumentException($"the prompt has {promptTokens.Count} tokens but the context holds {_decoder.Capacity}");
        }

        int batch = _decoder.Batch;
        var step = new int[batch];
        var picked = new int[batch];
        _decoder.Reset();
        _decoder.SeedSampler(seed);
        var sw = Stopwatch.StartNew();
        foreach (int t in promptTokens)
        {
            Array.Fill(step, t);
            _decoder.Step(step);
        }

        _decoder.Sample(temperature, topK, topP, picked);
        double prefillSeconds = sw.Elapsed.TotalSeconds;
        var text = new StringBuilder();
        var generated = new List<int>();
        var streaming = new StreamingTextDecoder(_tokenizer, promptTokens[^1]);
        string reason = "max_tokens";
        int decodeSteps = 0;
        sw.Restart();
        while (generated.Count < maxTokens)
        {
            int next = picked[0];
            if (next == _tokenizer.EosToken || next == _tokenizer.BosToken)
            {
                reason = "eos";
                break;
            }

            generated.Add(next);
            string piece = streaming.Push(next);
            text.Append(piece);
            onText?.Invoke(piece);
            if (generated.Count >= maxTokens)
            {
                break;
            }

            if (_decoder.Position >= _decoder.Capacity)
            {
                reason = "context_full";
                break;
            }

            _decoder.StepSampled();
            _decoder.Sample(temperature, topK, topP, picked);
            decodeSteps++;
        }

        double decodeSeconds = sw.Elapsed.TotalSeconds;
        return new GenerationResult(
            promptTokens,
            generated,
            text.ToString(),
            reason,
            promptTokens.Count / Math.Max(prefillSeconds, 1e-9),
            decodeSteps == 0 ? 0 : decodeSteps / Math.Max(decodeSeconds, 1e-9),
            _decoder.CacheBytes);
    }
}
