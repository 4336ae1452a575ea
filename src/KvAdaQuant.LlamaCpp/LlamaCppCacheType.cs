namespace KvAdaQuant.LlamaCpp;

/// <summary>Element type of llama.cpp's K or V cache (its <c>--cache-type-k/v</c>).</summary>
public enum LlamaCppCacheType
{
    /// <summary>32-bit float.</summary>
    F32,

    /// <summary>16-bit float (llama.cpp's default).</summary>
    F16,

    /// <summary>Blocks of 32 int8 values with one FP16 scale (8.5 bits per value).</summary>
    Q8_0,

    /// <summary>Blocks of 32 4-bit values with one FP16 scale (4.5 bits per value).</summary>
    Q4_0,
}
