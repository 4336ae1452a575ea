namespace KvAdaQuant.KvCache;

/// <summary>Shape of a model's KV cache: layers, KV heads per layer, head size and token capacity.</summary>
public sealed record KvLayout(int Layers, int KvHeads, int HeadDim, int Capacity)
{
    /// <summary>Softmax scale 1/sqrt(HeadDim).</summary>
    public float Scale => 1f / MathF.Sqrt(HeadDim);

    /// <summary>Elements of K (or V) per token per layer.</summary>
    public int KvDim => KvHeads * HeadDim;
}
