using KvAdaQuant.Engine;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Text generation on a <see cref="CudaDecoder"/>: the prompt runs through <see cref="CudaDecoder.Prefill"/> in chunks
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
    public GenerationResult Generate(
        string prompt, int maxTokens, float temperature, int topK, float topP, ulong seed, Action<string>? onText = null, IReadOnlyList<string>? stopTexts = null)
    {
        Sampler.Validate(temperature, topK, topP);
        var promptTokens = _tokenizer.Encode(prompt, addBos: true);
        int[] picked = new int[_decoder.Batch];
        return GenerationLoop.Run(
            promptTokens,
            _tokenizer,
            maxTokens,
            _decoder.Capacity,
            prefill: () =>
            {
                _decoder.Reset();
                _decoder.SeedSampler(seed);

                // Position-major: every sequence gets the prompt.
                var all = new int[promptTokens.Count * _decoder.Batch];
                for (int p = 0; p < promptTokens.Count; p++)
                {
                    all.AsSpan(p * _decoder.Batch, _decoder.Batch).Fill(promptTokens[p]);
                }

                _decoder.Prefill(all);

                _decoder.Sample(temperature, topK, topP, picked);
                return picked[0];
            },
            step: _ =>
            {
                // The device appends the tokens it sampled itself (every sequence its own); sequence 0 is streamed.
                _decoder.StepSampled();
                _decoder.Sample(temperature, topK, topP, picked);
                return picked[0];
            },
            position: () => _decoder.Position,
            kvBytes: () => _decoder.CacheBytes,
            onText,
            stopTexts: stopTexts);
    }

    /// <summary>
    /// Generates with <paramref name="sampler"/> on the host: after each step the logits are copied back and sampled
    /// there, so every setting of <see cref="Sampler"/> (min-p, the penalties over the prompt and the generated tokens)
    /// works as on the CPU, at the cost of one vocabulary of floats copied per token. Batch 1 only.
    /// </summary>
    public GenerationResult Generate(string prompt, int maxTokens, Sampler sampler, Action<string>? onText = null, IReadOnlyList<string>? stopTexts = null) =>
        new Generator(new CudaDecodeSession(_decoder), _tokenizer).Generate(prompt, maxTokens, sampler, onText, stopTexts);
}
