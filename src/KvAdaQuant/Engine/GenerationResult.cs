namespace KvAdaQuant.Engine;

/// <summary>What a generation produced and how fast.</summary>
public sealed record GenerationResult(
    IReadOnlyList<int> PromptTokens,
    IReadOnlyList<int> Tokens,
    string Text,
    string StopReason,
    double PrefillTokensPerSecond,
    double DecodeTokensPerSecond,
    long KvBytes)
{
    /// <summary>With <see cref="LogprobOptions"/>: one entry per token of <see cref="Tokens"/>, in order; else null.</summary>
    public IReadOnlyList<TokenLogprob>? Logprobs { get; init; }

    /// <summary>With <see cref="LogprobOptions.Prompt"/>: one entry per prompt token after the first, in order; else null.</summary>
    public IReadOnlyList<TokenLogprob>? PromptLogprobs { get; init; }
}
