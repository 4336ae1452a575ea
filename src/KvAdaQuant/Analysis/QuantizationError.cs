namespace KvAdaQuant.Analysis;

/// <summary>
/// ||A - Q(A)||_F / ||A||_F of one layer's K (after RoPE) and V, all heads together, at <see cref="Bits"/> (nominal bits; 1.58 for ternary).
/// </summary>
public sealed record QuantizationError(double Bits, double K, double V);
