namespace KvAdaQuant.KvCache;

/// <summary>
/// How a quantized cache computes decode attention: the scores q · k (<c>--attn-int8</c> on the command line) and the
/// weighted value sum (<c>--attn-int8-values</c>).
/// </summary>
public enum AttentionPrecision
{
    /// <summary>FP32 queries against the dequantized keys (the default).</summary>
    Fp32,

    /// <summary>
    /// Int8 queries (one FP32 step per key parameter group, Q8_0-like) and integer dot products with the packed key codes
    /// (AVX-512BW, with AVX-VNNI where present); the softmax normalisation folded into the value sum. Layers whose keys
    /// are FP16/FP32, per-channel, 1-, 1.58-, 3-, 5- or 6-bit, or of an unsupported group shape keep FP32 attention.
    /// </summary>
    Int8,

    /// <summary>
    /// <see cref="Int8"/> scores, and value sums over 2- and 4-bit values with the softmax weights times the value steps
    /// rounded to bytes per block of 64 tokens (<see cref="Numerics.Int8ValueKernels"/>: int16 sums of
    /// <c>vpmaddubsw</c>, AVX-512BW/VBMI). Layers whose values are not per-token groups the kernel takes
    /// (<see cref="Numerics.Int8ValueKernels.Supports"/>: 2-bit at head dim 32 with groups of 32 or multiples of 64
    /// with groups of 32 or 64+; 4-bit at head dim 32 or multiples of 64 with groups of a multiple of 32), or CPUs
    /// without AVX-512 VBMI, keep the FP32 value sum; layers whose keys do not qualify keep FP32 attention.
    /// </summary>
    Int8Values,
}
