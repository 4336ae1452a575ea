using System.Runtime.InteropServices;
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

    /// <summary>
    /// Generates up to <paramref name="maxTokens"/> tokens after <paramref name="prompt"/>; <paramref name="onText"/> receives
    /// text as it completes; the run also ends once the generated text ends with one of <paramref name="stopTexts"/> (stop
    /// reason <c>stop_text</c>, the text kept, as transformers' <c>stop_strings</c>).
    /// </summary>
    public GenerationResult Generate(string prompt, int maxTokens, Sampler sampler, Action<string>? onText = null, IReadOnlyList<string>? stopTexts = null)
    {
        var promptTokens = _tokenizer.Encode(prompt, addBos: true);
        return Generate(promptTokens, maxTokens, sampler, onText, stopTexts);
    }

    /// <summary>Generates after already tokenized <paramref name="promptTokens"/>.</summary>
    /// <remarks>The sampler's penalties see the prompt and the generated tokens, as llama.cpp's and transformers' do.</remarks>
    public GenerationResult Generate(IReadOnlyList<int> promptTokens, int maxTokens, Sampler sampler, Action<string>? onText = null, IReadOnlyList<string>? stopTexts = null)
    {
        // The sequence so far, for the penalties (only kept when the sampler has any).
        var sequence = new List<int>(sampler.HasPenalties ? promptTokens.Count + maxTokens : 0);
        return GenerationLoop.Run(
            promptTokens,
            _tokenizer,
            maxTokens,
            _session.Cache.Layout.Capacity,
            prefill: () =>
            {
                _session.Reset();
                var tokens = promptTokens.ToArray();
                if (sampler.HasPenalties)
                {
                    sequence.AddRange(tokens);
                }

                return sampler.Sample(_session.Prefill(tokens), CollectionsMarshal.AsSpan(sequence));
            },
            step: t =>
            {
                if (sampler.HasPenalties)
                {
                    sequence.Add(t);
                }

                return sampler.Sample(_session.Decode(t), CollectionsMarshal.AsSpan(sequence));
            },
            position: () => _session.Position,
            kvBytes: () => _session.Cache.ByteCount,
            onText,
            stopTexts: stopTexts);
    }
}
