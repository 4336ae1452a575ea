using BenchmarkDotNet.Attributes;

namespace KvAdaQuant.Bench;

/// <summary>
/// The fused kernels against the row-at-a-time path they replaced (<c>Fused=False</c>), in the same process, at
/// 32k context for FP16 and k4v2: the A/B of issue 6's attention work.
/// </summary>
[Config(typeof(AttentionBenchmarkConfig))]
public class AttentionPathBenchmarks : AttentionStepBenchmark
{
    /// <inheritdoc/>
    [Params("llama-3.2-1b", "llama-3.1-8b")]
    public override string Shape { get; set; } = "llama-3.2-1b";

    /// <inheritdoc/>
    [Params(32768)]
    public override int Context { get; set; }

    /// <inheritdoc/>
    [Params("fp16", "k4v2")]
    public override string Kv { get; set; } = "k4v2";

    /// <inheritdoc/>
    [Params(true, false)]
    public override bool Fused { get; set; } = true;
}
