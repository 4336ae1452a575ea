namespace KvAdaQuant.Cli.Bench;

/// <summary>Medians for one engine at one context.</summary>
internal sealed record BenchEngineResult(string Name, string Cache, double PrefillTokensPerSecond, double DecodeTokensPerSecond, long KvBytes);
