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

    /// <summary>Prompt tokens run (those not taken from the cache).</summary>
    public int PrefillTokens { get; init; }

    /// <summary>Seconds the prompt took (its tokens run, the first token's logits).</summary>
    public double PrefillSeconds { get; init; }

    /// <summary>Decode steps run (one per generated token after the first, which the prompt's logits give).</summary>
    public int DecodeSteps { get; init; }

    /// <summary>Seconds from the end of the prompt to the end of the run (sampling, the decode steps, handing out text).</summary>
    public double DecodeSeconds { get; init; }

    /// <summary>With <see cref="Generator.Speculative"/>: how many tokens were guessed and how many of them kept; else null.</summary>
    public Speculative.SpeculationStats? Speculation { get; init; }

    /// <summary>With <see cref="LogprobOptions.Prompt"/>: one entry per prompt token after the first, in order; else null.</summary>
    public IReadOnlyList<TokenLogprob>? PromptLogprobs { get; init; }
}
