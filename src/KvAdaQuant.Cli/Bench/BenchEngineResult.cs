namespace KvAdaQuant.Cli.Bench;

/// <summary>Medians for one engine at one context; with several <paramref name="Sequences"/> the tokens/s count all of them.</summary>
internal sealed record BenchEngineResult(string Name, string Cache, double PrefillTokensPerSecond, double DecodeTokensPerSecond, long KvBytes, int Sequences = 1);
