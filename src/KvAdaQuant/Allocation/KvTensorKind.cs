namespace KvAdaQuant.Allocation;

/// <summary>Which of a layer's two cached tensors.</summary>
public enum KvTensorKind
{
    /// <summary>Keys (after RoPE).</summary>
    Key,

    /// <summary>Values.</summary>
    Value,
}
