namespace KvAdaQuant.Engine;

/// <summary>What a generation produced and how fast.</summary>
public sealed record GenerationResult(
    IReadOnlyList<int> PromptTokens,
    IReadOnlyList<int> Tokens,
    string Text,
    string StopReason,
    double PrefillTokensPerSecond,
    double DecodeTokensPerSecond,
    long KvBytes);
