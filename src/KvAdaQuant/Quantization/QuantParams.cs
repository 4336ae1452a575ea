namespace KvAdaQuant.Quantization;

/// <summary>
/// The stored parameters of one quantization group: an FP16 scale and (asymmetric only) an FP16 zero point.
/// A code c dequantizes to <c>Step * c + Offset</c> (see <see cref="AffineQuantizer.Effective"/>).
/// </summary>
public readonly record struct QuantParams(Half Scale, Half Zero);
