using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// One request of a server over a loaded model: <see cref="Generator"/>'s run (the whole prompt on a cleared cache, then
/// sample and decode), which also stops at a chat template's end-of-turn token and when a
/// <see cref="CancellationToken"/> is signalled (a client gone, a stop text found by the caller, a shutdown).
/// </summary>
public sealed class RequestGenerator
{
    private readonly InferenceSession _session;
    private readonly ITokenizer _tokenizer;

    /// <summary>Creates a generator over <paramref name="session"/>; each call clears its cache first.</summary>
    public RequestGenerator(InferenceSession session, ITokenizer tokenizer)
    {
        _session = session;
        _tokenizer = tokenizer;
    }

    /// <summary>
    /// Generates up to <paramref name="maxTokens"/> tokens after <paramref name="promptTokens"/> (BOS included), streaming
    /// text to <paramref name="onText"/>. Stops at EOS or <paramref name="endOfTurn"/> (stop reason <c>eos</c>; -1 for none),
    /// the token limit (<c>max_tokens</c>), a full context (<c>context_full</c>), or once <paramref name="cancel"/> is
    /// signalled (<c>cancelled</c>, after the token being streamed). A prompt longer than the context is an
    /// <see cref="ArgumentException"/> before anything runs.
    /// </summary>
    public GenerationResult Generate(
        IReadOnlyList<int> promptTokens, int maxTokens, Sampler sampler, Action<string>? onText, int endOfTurn = -1, CancellationToken cancel = default) =>
        GenerationLoop.Run(
            promptTokens,
            _tokenizer,
            maxTokens,
            _session.Cache.Layout.Capacity,
            prefill: () =>
            {
                _session.Reset();
                return sampler.Sample(_session.Prefill(promptTokens.ToArray()));
            },
            step: t => sampler.Sample(_session.Decode(t)),
            position: () => _session.Position,
            kvBytes: () => _session.Cache.ByteCount,
            onText,
            endOfTurn,
            cancel);
}
