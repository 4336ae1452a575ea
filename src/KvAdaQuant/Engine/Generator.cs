using System.Runtime.InteropServices;
using KvAdaQuant.Engine.Speculative;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// Prompt in, tokens out: prefill, then sample and decode until EOS, the token limit or the end of the context, on any
/// <see cref="IDecodeSession"/> (the CPU's <see cref="InferenceSession"/>, or the GPU's <c>CudaDecodeSession</c>, which
/// <c>CudaGenerator</c> uses for host sampling).
/// </summary>
public sealed class Generator
{
    private readonly IDecodeSession _session;
    private readonly ITokenizer _tokenizer;

    /// <summary>Creates a generator.</summary>
    public Generator(IDecodeSession session, ITokenizer tokenizer)
    {
        _session = session;
        _tokenizer = tokenizer;
    }

    /// <summary>
    /// Speculative decoding (<see cref="SpeculativeDecoding"/>), or null (the default): decode steps run the token fed
    /// and a draft's guesses as one batch and keep the guesses the sampler draws too. The text is the same token for
    /// token; <see cref="GenerationResult.Speculation"/> counts the guesses. The CPU engine's sessions only, on caches
    /// whose results do not depend on the batch (<see cref="InferenceSession.IsBatchInvariant"/>); other sessions and
    /// caches are refused when a generation starts.
    /// </summary>
    public SpeculativeDecoding? Speculative { get; init; }

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
    /// <remarks>The sampler's penalties and DRY see the prompt and the generated tokens, as llama.cpp's and transformers' do.</remarks>
    public GenerationResult Generate(IReadOnlyList<int> promptTokens, int maxTokens, Sampler sampler, Action<string>? onText = null, IReadOnlyList<string>? stopTexts = null) =>
        Generate(promptTokens, cachedTokens: 0, maxTokens, sampler, onText, stopTexts);

    /// <summary>
    /// Generates after <paramref name="promptTokens"/> whose first <paramref name="cachedTokens"/> the session's cache
    /// already holds (a restored state, <see cref="SessionStateFile"/>; a server's or a chat's earlier tokens): only the
    /// rest is prefilled, and with the whole prompt cached the first token is sampled from the session's last logits. 0
    /// starts from an empty cache. <paramref name="afterPrefill"/> runs once the cache holds the prompt, before the first
    /// token is sampled. <paramref name="logprobs"/> records log-probabilities (<see cref="GenerationResult.Logprobs"/>; the
    /// prompt's need <paramref name="cachedTokens"/> 0). The run also stops at <paramref name="endOfTurn"/> like EOS (-1:
    /// none) and once <paramref name="cancel"/> is signalled (stop reason <c>cancelled</c>). A <see cref="Sampler.Grammar"/>
    /// starts over here, after the prompt's last token, with <paramref name="endOfTurn"/> allowed like EOS once complete;
    /// where it allows no token the run ends with stop reason <c>grammar_dead_end</c>. The prefill speed counts the
    /// tokens run. This is the one generation every other wraps (<see cref="RequestGenerator"/>, <see cref="ChatSession"/>).
    /// </summary>
    public GenerationResult Generate(
        IReadOnlyList<int> promptTokens,
        int cachedTokens,
        int maxTokens,
        Sampler sampler,
        Action<string>? onText = null,
        IReadOnlyList<string>? stopTexts = null,
        Action? afterPrefill = null,
        LogprobOptions? logprobs = null,
        int endOfTurn = -1,
        CancellationToken cancel = default)
    {
        if (cachedTokens < 0 || cachedTokens > promptTokens.Count || (cachedTokens > 0 && cachedTokens != _session.Position))
        {
            throw new ArgumentOutOfRangeException(nameof(cachedTokens), $"{cachedTokens} cached prompt tokens, but the prompt has {promptTokens.Count} and the cache holds {_session.Position} positions");
        }

        var recorder = new LogprobRecorder(logprobs);
        if (recorder.Prompt && cachedTokens > 0)
        {
            throw new ArgumentException($"the prompt's log-probabilities need the whole prompt run, but {cachedTokens} of its tokens came from a saved cache");
        }

        var stepper = Speculative is null ? null : new SpeculativeStepper(_session, Speculative);

        // A grammar starts over with each generation (a chat's turns too), after the prompt's last token.
        sampler.Grammar?.Reset(promptTokens.Count > 0 ? promptTokens[^1] : -1, endOfTurn);

        // So does Mirostat's mu.
        sampler.Reset();

        // The sequence so far, for the penalties, DRY and the draft (only kept when there is any).
        bool keepSequence = sampler.ReadsSequence || stepper is not null;
        // (Room for the whole run, up to the session's context: max_tokens may be far beyond it, up to int.MaxValue.)
        var sequence = new List<int>(keepSequence ? (int)Math.Min(promptTokens.Count + (long)maxTokens, Math.Max(_session.Capacity, promptTokens.Count)) : 0);
        GenerationResult run;
        try
        {
            run = GenerationLoop.Run(
            promptTokens,
            _tokenizer,
            maxTokens,
            _session.Capacity,
            prefill: () =>
            {
                if (cachedTokens == 0)
                {
                    _session.Reset();
                }

                if (cachedTokens < promptTokens.Count)
                {
                    recorder.Prefill(_session, promptTokens.Skip(cachedTokens).ToArray(), cachedTokens);
                }

                afterPrefill?.Invoke();
                if (keepSequence)
                {
                    sequence.AddRange(promptTokens);
                }

                return recorder.Sample(sampler, _session.Logits, CollectionsMarshal.AsSpan(sequence));
            },
            step: t =>
            {
                if (keepSequence)
                {
                    sequence.Add(t);
                }

                var seen = CollectionsMarshal.AsSpan(sequence);
                return recorder.Sample(sampler, stepper is null ? _session.Decode(t) : stepper.Step(t, seen), seen);
            },
            position: () => stepper?.Position ?? _session.Position,
            kvBytes: () => _session.ByteCount,
            onText,
            endOfTurn,
            cancel,
            stopTexts,
            runTokens: promptTokens.Count - cachedTokens);
        }
        finally
        {
            // The cache and the logits as one token at a time would have left them.
            stepper?.Finish();
        }

        var result = recorder.Complete(stepper is null ? run : run with { Speculation = stepper.Stats, KvBytes = _session.ByteCount });
        return sampler.Grammar is { IsDeadEnd: true } && result.StopReason == "eos" ? result with { StopReason = "grammar_dead_end" } : result;
    }
}
