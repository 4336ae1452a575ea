namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// One layer of the GPU decode cache: FP16 rows [batch][kvHead][capacity][headDim] for K and V, or packed codes and
/// (scale, min) pairs [batch][kvHead][capacity] (the layout of <see cref="PackedKvFormat"/>, per-token groups) plus an
/// FP16 residual window [batch][kvHead][window + flush chunk][headDim] for K and V.
/// </summary>
public sealed record GpuKvLayerLayout(PackedKvFormat? Keys, PackedKvFormat? Values)
{
    /// <summary>Whether the K4V2 kernel may serve the layer (off for flush chunks that are not multiples of 32, or to compare kernels).</summary>
    public bool AllowFastKernel { get; init; } = true;

    /// <summary>Whether the keys are stored rotated (the <c>rot</c> option; the query is rotated alike before the scores).</summary>
    public bool RotateKeys { get; init; }

    /// <summary>Whether the values are stored rotated (the attention output is turned back before W_O).</summary>
    public bool RotateValues { get; init; }

    /// <summary>Whether the layer stores packed codes (else FP16 rows).</summary>
    public bool IsPacked => Keys is not null;

    /// <summary>Whether the K4V2 tensor-core kernel serves this layer (K 4-bit and V 2-bit per-token g64, head dim 128 or 64).</summary>
    public bool UsesFastKernel => AllowFastKernel && Keys is { BitsCode: 4, GroupSize: 64, Axis: PackedKvAxis.PerToken, HeadDim: 128 or 64 }
        && Values is { BitsCode: 2, GroupSize: 64, Axis: PackedKvAxis.PerToken };

    /// <summary>Device bytes of this layer for <paramref name="heads"/> (batch x KV heads) heads.</summary>
    public long ByteCount(long heads, int capacity, int headDim, int residualCapacity) => IsPacked
        ? heads * (Keys!.BytesPerHead(capacity) + Values!.BytesPerHead(capacity) + (2L * 2 * residualCapacity * headDim))
        : heads * 2L * 2 * capacity * headDim;

    /// <summary>"fp16" or "k4:g64:tok/v2:g64:tok".</summary>
    public override string ToString() => IsPacked ? $"k{Keys}{(RotateKeys ? ":rot" : string.Empty)}/v{Values}{(RotateValues ? ":rot" : string.Empty)}" : "fp16";
}
