namespace KvAdaQuant.KvCache;

/// <summary>How a quantized cache computes the scores q · k of decode attention (<c>--attn-int8</c> on the command line).</summary>
public enum AttentionPrecision
{
    /// <summary>FP32 queries against the dequantized keys (the default).</summary>
    Fp32,

    /// <summary>
    /// Int8 queries (one FP32 step per key parameter group, Q8_0-like) and integer dot products with the packed key codes
    /// (AVX-VNNI); the softmax normalisation folded into the value sum. Layers whose keys are FP16/FP32, per-channel,
    /// 1-, 1.58-, 3-, 5- or 6-bit, or of an unsupported group shape keep FP32 attention.
    /// </summary>
    Int8,
}
