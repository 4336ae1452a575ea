using BenchmarkDotNet.Attributes;

namespace KvAdaQuant.Bench;

/// <summary>
/// FP32 against int8 scores (<c>--attn-int8</c>) and int8 scores with byte-weight value sums (<c>--attn-int8-values</c>) on the k4v2 decode step at 32k positions, both shapes, 1 and 2 threads
/// (setup and the CacheMB, GB/s and %Triad columns: <see cref="AttentionStepBenchmark"/>); run it with
/// <see cref="TriadBenchmark"/> and <c>--join</c> for %Triad.
/// </summary>
[Config(typeof(AttentionBenchmarkConfig))]
public class Int8AttentionBenchmarks : AttentionStepBenchmark
{
    /// <inheritdoc/>
    [Params("llama-3.2-1b", "llama-3.1-8b")]
    public override string Shape { get; set; } = "llama-3.2-1b";

    /// <inheritdoc/>
    [Params(32768)]
    public override int Context { get; set; } = 32768;

    /// <inheritdoc/>
    [Params("k4v2")]
    public override string Kv { get; set; } = "k4v2";

    /// <inheritdoc/>
    public override bool Fused { get; set; } = true;

    /// <inheritdoc/>
    [Params(1, 2)]
    public override int Threads { get; set; } = 1;

    /// <inheritdoc/>
    [Params("fp32", "int8", "int8-values")]
    public override string Attention { get; set; } = "fp32";
}
