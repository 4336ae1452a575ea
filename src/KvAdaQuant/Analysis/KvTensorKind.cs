namespace KvAdaQuant.Analysis;

/// <summary>Which captured per-layer tensor.</summary>
public enum KvTensorKind
{
    /// <summary>Keys after RoPE (what the cache stores).</summary>
    Keys,

    /// <summary>Keys before RoPE.</summary>
    KeysPreRope,

    /// <summary>Values.</summary>
    Values,
}
