namespace KvAdaQuant.Analysis;

/// <summary>
/// ||A - Q(A)||_F / ||A||_F of one layer's K (after RoPE) and V, all heads together, at <see cref="Bits"/>.
/// </summary>
public sealed record QuantizationError(int Bits, double K, double V);
