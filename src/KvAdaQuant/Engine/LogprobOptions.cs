namespace KvAdaQuant.Engine;

/// <summary>
/// What log-probabilities a generation records (<see cref="Generator"/>, <see cref="RequestGenerator"/>): one
/// <see cref="TokenLogprob"/> per generated token with the <see cref="Top"/> most likely tokens, and with
/// <see cref="Prompt"/> one per prompt token after the first (OpenAI's <c>echo</c> with <c>logprobs</c>; lm-evaluation-harness
/// scores continuations this way).
/// </summary>
/// <param name="Top">Most likely tokens to list per position (0: only the chosen token's log-probability).</param>
public sealed record LogprobOptions(int Top)
{
    /// <summary>Largest <see cref="Top"/> the command line and the server accept (OpenAI's <c>top_logprobs</c> limit).</summary>
    public const int MaxTop = 20;

    /// <summary>Also the prompt's tokens (all but the first, which no position predicts); the whole prompt is then run, none of it taken from a cache.</summary>
    public bool Prompt { get; init; }

    /// <summary>Receives each generated token's entry as it is sampled, before its text is streamed (a server's chunks).</summary>
    public Action<TokenLogprob>? OnToken { get; init; }

    /// <summary>With <see cref="Prompt"/>: receives the prompt's entries once the prompt has run, before the first token is sampled.</summary>
    public Action<IReadOnlyList<TokenLogprob>>? OnPrompt { get; init; }
}
