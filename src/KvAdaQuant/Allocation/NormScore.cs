namespace KvAdaQuant.Allocation;

/// <summary>Which matrix norm weighs a tensor in the norm-aware allocators.</summary>
public enum NormScore
{
    /// <summary>Frobenius norm.</summary>
    Frobenius,

    /// <summary>Spectral norm (largest singular value).</summary>
    Spectral,
}
