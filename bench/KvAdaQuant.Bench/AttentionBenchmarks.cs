using BenchmarkDotNet.Attributes;

namespace KvAdaQuant.Bench;

/// <summary>The attention grid: both shapes x 4k/32k x six cache kinds x 1 and 2 threads, fused kernels (setup and columns: <see cref="AttentionStepBenchmark"/>).</summary>
[Config(typeof(AttentionBenchmarkConfig))]
public class AttentionBenchmarks : AttentionStepBenchmark
{
    /// <inheritdoc/>
    [Params("llama-3.2-1b", "llama-3.1-8b")]
    public override string Shape { get; set; } = "llama-3.2-1b";

    /// <inheritdoc/>
    [Params(4096, 32768)]
    public override int Context { get; set; }

    /// <inheritdoc/>
    [Params("fp16", "fp32", "k4v2", "k4v4", "k8v8", "k2v2")]
    public override string Kv { get; set; } = "fp32";

    /// <inheritdoc/>
    public override bool Fused { get; set; } = true;

    /// <inheritdoc/>
    [Params(1, 2)]
    public override int Threads { get; set; } = 1;
}
