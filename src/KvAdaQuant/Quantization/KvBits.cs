namespace KvAdaQuant.Quantization;

/// <summary>Storage precision of one cached tensor kind (K or V): a quantized bit width or full precision.</summary>
public enum KvBits
{
    /// <summary>1 bit per element (2 levels), 8 codes per byte.</summary>
    One,

    /// <summary>1.58 bits (3 levels, ternary), 5 trits per byte in base 3.</summary>
    Ternary,

    /// <summary>2 bits, 4 codes per byte.</summary>
    Two,

    /// <summary>3 bits, 8 codes per 3 bytes.</summary>
    Three,

    /// <summary>4 bits, 2 codes per byte.</summary>
    Four,

    /// <summary>5 bits, 8 codes per 5 bytes.</summary>
    Five,

    /// <summary>6 bits, 4 codes per 3 bytes.</summary>
    Six,

    /// <summary>8 bits, one code per byte.</summary>
    Eight,

    /// <summary>Unquantized IEEE half precision.</summary>
    Fp16,

    /// <summary>Unquantized single precision.</summary>
    Fp32,
}
