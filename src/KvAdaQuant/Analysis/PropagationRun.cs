namespace KvAdaQuant.Analysis;

/// <summary>
/// One forward pass with only K (<see cref="Quantized"/> = "k") or only V ("v") quantized to <see cref="Bits"/>,
/// compared with the unquantized pass over the same tokens.
/// </summary>
public sealed class PropagationRun
{
    /// <summary>Nominal bits of the quantized tensor (1.58 for ternary).</summary>
    public required double Bits { get; init; }

    /// <summary>"k" (only keys quantized) or "v" (only values).</summary>
    public required string Quantized { get; init; }

    /// <summary>Scheme description.</summary>
    public required string Scheme { get; init; }

    /// <summary>Per layer: ||att - att_ref||_F / ||att_ref||_F of the attention output (all positions; includes error carried in from earlier layers).</summary>
    public required double[] AttentionError { get; init; }

    /// <summary>Per layer: relative Frobenius error of the residual stream after the layer.</summary>
    public required double[] ResidualError { get; init; }

    /// <summary>Mean over positions of KL(p_ref || p_quantized) of the next-token distribution.</summary>
    public required double KlMean { get; init; }

    /// <summary>KL(p_ref || p_quantized) at the last position.</summary>
    public required double KlLast { get; init; }

    /// <summary>Fraction of positions whose arg-max next token is unchanged.</summary>
    public required double Top1Agreement { get; init; }

    /// <summary>Why the run could not finish (the cache refused a non-finite value), or null; the errors are then NaN.</summary>
    public string? Failure { get; init; }
}
