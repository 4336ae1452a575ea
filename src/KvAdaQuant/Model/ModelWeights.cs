using KvAdaQuant.Numerics;

namespace KvAdaQuant.Model;

/// <summary>All weights of a Llama-family model, and the memory that holds them.</summary>
public sealed class ModelWeights : IDisposable
{
    private readonly List<IDisposable> _owned;

    /// <summary>Creates the weights; <paramref name="owned"/> is disposed with them.</summary>
    public ModelWeights(WeightMatrix tokenEmbedding, LayerWeights[] layers, float[] finalNorm, WeightMatrix output, IEnumerable<IDisposable> owned)
    {
        TokenEmbedding = tokenEmbedding;
        Layers = layers;
        FinalNorm = finalNorm;
        Output = output;
        _owned = owned.ToList();
    }

    /// <summary>Token embedding [Vocab, Dim].</summary>
    public WeightMatrix TokenEmbedding { get; }

    /// <summary>Per-layer weights.</summary>
    public LayerWeights[] Layers { get; }

    /// <summary>Final RMSNorm weight.</summary>
    public float[] FinalNorm { get; }

    /// <summary>Optional per-pair RoPE frequency divisors (GGUF <c>rope_freqs.weight</c>, Llama 3.1 scaling).</summary>
    public float[]? RopeFrequencyFactors { get; init; }

    /// <summary>Output (classifier) projection [Vocab, Dim]; may be <see cref="TokenEmbedding"/>.</summary>
    public WeightMatrix Output { get; }

    /// <summary>Bytes of the matrices read per decoded token (all layers, output, one embedding row).</summary>
    public long BytesPerToken => Layers.Sum(l => l.Wq.ByteCount + l.Wk.ByteCount + l.Wv.ByteCount + l.Wo.ByteCount
        + l.W1.ByteCount + l.W2.ByteCount + l.W3.ByteCount) + Output.ByteCount;

    /// <inheritdoc/>
    public void Dispose()
    {
        // The matrices' Q4_0 row-group copies (a matrix shared with other weights makes its copy again if multiplied).
        foreach (var m in Layers.SelectMany(l => new[] { l.Wq, l.Wk, l.Wv, l.Wo, l.W1, l.W2, l.W3 }).Append(TokenEmbedding).Append(Output).Distinct())
        {
            m.Dispose();
        }

        foreach (var o in _owned)
        {
            o.Dispose();
        }

        _owned.Clear();
    }
}
