using LLama.Native;

namespace KvAdaQuant.LlamaCpp;

/// <summary>Names, sizes and native codes of <see cref="LlamaCppCacheType"/>.</summary>
public static class LlamaCppCacheTypes
{
    /// <summary>Parses <c>f32</c>, <c>f16</c>, <c>q8_0</c> or <c>q4_0</c> (case-insensitive).</summary>
    public static LlamaCppCacheType Parse(string text, string optionName) => text.Trim().ToLowerInvariant() switch
    {
        "f32" or "fp32" => LlamaCppCacheType.F32,
        "f16" or "fp16" => LlamaCppCacheType.F16,
        "q8_0" or "q8" => LlamaCppCacheType.Q8_0,
        "q4_0" or "q4" => LlamaCppCacheType.Q4_0,
        _ => throw new ArgumentException($"{optionName} '{text}': unknown llama.cpp cache type (expected f32, f16, q8_0 or q4_0)"),
    };

    /// <summary>The lower-case name llama.cpp's tools use.</summary>
    public static string Name(LlamaCppCacheType type) => type switch
    {
        LlamaCppCacheType.F32 => "f32",
        LlamaCppCacheType.F16 => "f16",
        LlamaCppCacheType.Q8_0 => "q8_0",
        LlamaCppCacheType.Q4_0 => "q4_0",
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>Whether values are block-quantized (a quantized V needs flash attention).</summary>
    public static bool IsQuantized(LlamaCppCacheType type) => type is LlamaCppCacheType.Q8_0 or LlamaCppCacheType.Q4_0;

    /// <summary>Bytes that <paramref name="elements"/> values take (a multiple of 32 for the block types).</summary>
    public static long ByteCount(LlamaCppCacheType type, long elements) => type switch
    {
        LlamaCppCacheType.F32 => elements * 4,
        LlamaCppCacheType.F16 => elements * 2,
        LlamaCppCacheType.Q8_0 => elements / 32 * 34,
        LlamaCppCacheType.Q4_0 => elements / 32 * 18,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    internal static GGMLType ToNative(LlamaCppCacheType type) => type switch
    {
        LlamaCppCacheType.F32 => GGMLType.GGML_TYPE_F32,
        LlamaCppCacheType.F16 => GGMLType.GGML_TYPE_F16,
        LlamaCppCacheType.Q8_0 => GGMLType.GGML_TYPE_Q8_0,
        LlamaCppCacheType.Q4_0 => GGMLType.GGML_TYPE_Q4_0,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };
}
