namespace KvAdaQuant.Quantization;

/// <summary>Facts about a <see cref="KvBits"/> value: levels, nominal bits, names.</summary>
public static class KvBitsInfo
{
    /// <summary>Whether the width is a quantized one (not FP16/FP32).</summary>
    public static bool IsQuantized(this KvBits bits) => bits is not (KvBits.Fp16 or KvBits.Fp32);

    /// <summary>Number of quantization levels (2^b, or 3 for ternary).</summary>
    public static int Levels(this KvBits bits) => bits switch
    {
        KvBits.Ternary => 3,
        KvBits.Fp16 or KvBits.Fp32 => throw new ArgumentException($"{bits} is not a quantized width"),
        _ => 1 << bits.IntegerBits(),
    };

    /// <summary>Bits of a packed integer code (1..8); 0 for ternary and full precision.</summary>
    public static int IntegerBits(this KvBits bits) => bits switch
    {
        KvBits.One => 1,
        KvBits.Two => 2,
        KvBits.Three => 3,
        KvBits.Four => 4,
        KvBits.Five => 5,
        KvBits.Six => 6,
        KvBits.Eight => 8,
        _ => 0,
    };

    /// <summary>Nominal bits per element (1.58 for ternary, 16/32 for full precision).</summary>
    public static double NominalBits(this KvBits bits) => bits switch
    {
        KvBits.Ternary => 1.58,
        KvBits.Fp16 => 16,
        KvBits.Fp32 => 32,
        _ => bits.IntegerBits(),
    };

    /// <summary>Short name used in spec strings: 1, 1.58, 2, ..., 8, fp16, fp32.</summary>
    public static string Name(this KvBits bits) => bits switch
    {
        KvBits.Ternary => "1.58",
        KvBits.Fp16 => "fp16",
        KvBits.Fp32 => "fp32",
        _ => bits.IntegerBits().ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>Parses 1, 1.58 (or t), 2, 3, 4, 5, 6, 8, 16/fp16/f16, 32/fp32/f32; null when not one of them.</summary>
    public static KvBits? TryParse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "1" => KvBits.One,
        "1.58" or "1.585" or "t" or "ternary" => KvBits.Ternary,
        "2" => KvBits.Two,
        "3" => KvBits.Three,
        "4" => KvBits.Four,
        "5" => KvBits.Five,
        "6" => KvBits.Six,
        "8" => KvBits.Eight,
        "16" or "fp16" or "f16" => KvBits.Fp16,
        "32" or "fp32" or "f32" => KvBits.Fp32,
        _ => null,
    };

    /// <summary>The accepted spellings, for error messages.</summary>
    public const string Accepted = "1, 1.58, 2, 3, 4, 5, 6, 8, fp16 (16) or fp32 (32)";
}
