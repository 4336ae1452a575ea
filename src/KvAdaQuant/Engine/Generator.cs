using System.Diagnostics;
using System.Text;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>Prompt in, tokens out: prefill, then sample and decode until EOS, the token limit or the end of the context.</summary>
public sealed class Generator
{
    private readonly InferenceSession _session;
    private readonly ITokenizer _tokenizer;

    /// <summary>Creates a generator.</summary>
    public Generator(InferenceSession session, ITokenizer tokenizer)
    {
        _session = session;
        _tokenizer = tokenizer;
    }

    /// <summary>Generates up to <paramref name="maxTokens"/> tokens after <paramref name="prompt"/>; <paramref name="onText"/> receives text as it completes.</summary>
    public GenerationResult Generate(string prompt, int maxTokens, Sampler sampler, Action<string>? onText = null)
    {
        var promptTokens = _tokenizer.Encode(prompt, addBos: true);
        return Generate(promptTokens, maxTokens, sampler, onText);
    }

    /// <summary>Generates after already tokenized <paramref name="promptTokens"/>.</summary>
    public GenerationResult Generate(IReadOnlyList<int> promptTokens, int maxTokens, Sampler sampler, Action<string>? onText = null)
    {
        int capacity = _session.Cache.Layout.Capacity;
        if (promptTokens.Count == 0)
        {
            throw new ArgumentException("the prompt has no tokens (not even BOS)");
        }

        if (promptTokens.Count > capacity)
        {
            throw new ArgumentException($"the prompt has {promptTokens.Count} tokens but the context holds {capacity}");
        }

        _session.Reset();
        var sw = Stopwatch.StartNew();
        var logits = _session.Prefill(promptTokens.ToArray());
        double prefillSeconds = sw.Elapsed.TotalSeconds;
        var decoder = new StreamingTextDecoder(_tokenizer, promptTokens[^1]);
        var text = new StringBuilder();
        var generated = new List<int>();
        string reason = "max_tokens";
        sw.Restart();
        int decodeSteps = 0;
        while (generated.Count < maxTokens)
        {
            int next = sampler.Sample(logits);
            if (next == _tokenizer.EosToken || next == _tokenizer.BosToken)
            {
                reason = "eos";
                break;
            }

            generated.Add(next);
            var piece = decoder.Push(next);
            text.Append(piece);
            onText?.Invoke(piece);
            if (generated.Count >= maxTokens)
            {
                break;
            }

            if (_session.Position >= capacity)
            {
                reason = "context_full";
                break;
            }

            logits = _session.Decode(next);
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
            _session.Cache.ByteCount);
    }
}
