namespace KvAdaQuant.Engine;

/// <summary>
/// Watches a forward pass (for analysis): receives, per layer, the K and V rows of the new positions and
/// the residual stream after the layer. All spans are [tokens, width] and valid only during the call.
/// </summary>
public interface IForwardObserver
{
    /// <summary>Keys before RoPE, keys after RoPE (what the cache stores) and values of positions pos0..pos0+tokens-1.</summary>
    void OnKeyValues(int layer, int pos0, int tokens, ReadOnlySpan<float> keysPreRope, ReadOnlySpan<float> keys, ReadOnlySpan<float> values);

    /// <summary>Attention output (heads concatenated, before the output projection).</summary>
    void OnAttentionOutput(int layer, int pos0, int tokens, ReadOnlySpan<float> attention);

    /// <summary>Residual stream after layer <paramref name="layer"/>.</summary>
    void OnResidual(int layer, int pos0, int tokens, ReadOnlySpan<float> residual);
}
