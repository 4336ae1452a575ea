using System.Numerics.Tensors;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Engine;

/// <summary>
/// Turns a forward pass into a sequence embedding, as llama.cpp's embeddings do: the residual stream after the last layer,
/// through the model's final RMSNorm (what the output matrix would read: llama.cpp's <c>result_norm</c>), pooled over the
/// positions (<see cref="EmbeddingPooling"/>), optionally scaled to unit Euclidean length (llama-server's default). Pass
/// it to <see cref="InferenceSession.Prefill(ReadOnlySpan{int}, IForwardObserver?)"/> from an empty cache (position 0 is the
/// sequence's first); the mean is summed in double precision in position order.
/// </summary>
public sealed class EmbeddingCapture : IForwardObserver
{
    private readonly int _lastLayer;
    private readonly int _dim;
    private readonly float[] _norm;
    private readonly float _eps;
    private readonly float[] _row;
    private readonly double[] _sum;
    private readonly float[] _picked;
    private bool _first;

    /// <summary>Captures the embedding of <paramref name="transformer"/>'s model under <paramref name="pooling"/>.</summary>
    public EmbeddingCapture(Transformer transformer, EmbeddingPooling pooling)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        var config = transformer.Model.Config;
        _lastLayer = config.Layers - 1;
        _dim = config.Dim;
        _norm = transformer.Model.Weights.FinalNorm;
        _eps = config.NormEps;
        _row = new float[_dim];
        _sum = new double[_dim];
        _picked = new float[_dim];
        Pooling = pooling;
    }

    /// <summary>The pooling.</summary>
    public EmbeddingPooling Pooling { get; }

    /// <summary>Positions seen.</summary>
    public int Positions { get; private set; }

    /// <summary>
    /// The embedding of the positions seen (<paramref name="normalize"/>: divided by its Euclidean length, unless that is 0);
    /// an <see cref="InvalidOperationException"/> before any, or for cls pooling without position 0.
    /// </summary>
    public float[] Embedding(bool normalize = true)
    {
        if (Positions == 0)
        {
            throw new InvalidOperationException("no positions were run: an embedding needs at least one token");
        }

        if (Pooling == EmbeddingPooling.Cls && !_first)
        {
            throw new InvalidOperationException("cls pooling takes position 0, which this capture did not see (start from an empty cache)");
        }

        var e = new float[_dim];
        if (Pooling == EmbeddingPooling.Mean)
        {
            for (int i = 0; i < _dim; i++)
            {
                e[i] = (float)(_sum[i] / Positions);
            }
        }
        else
        {
            _picked.CopyTo(e, 0);
        }

        if (normalize)
        {
            double norm = 0;
            foreach (float v in e)
            {
                norm += (double)v * v;
            }

            if (norm > 0)
            {
                TensorPrimitives.Multiply(e, (float)(1 / Math.Sqrt(norm)), e);
            }
        }

        return e;
    }

    /// <inheritdoc/>
    public void OnKeyValues(int layer, int pos0, int tokens, ReadOnlySpan<float> keysPreRope, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
    }

    /// <inheritdoc/>
    public void OnAttentionOutput(int layer, int pos0, int tokens, ReadOnlySpan<float> attention)
    {
    }

    /// <inheritdoc/>
    public void OnResidual(int layer, int pos0, int tokens, ReadOnlySpan<float> residual)
    {
        if (layer != _lastLayer)
        {
            return;
        }

        for (int t = 0; t < tokens; t++)
        {
            Kernels.RmsNorm(residual.Slice(t * _dim, _dim), _norm, _eps, _row);
            int position = pos0 + t;
            switch (Pooling)
            {
                case EmbeddingPooling.Mean:
                    for (int i = 0; i < _dim; i++)
                    {
                        _sum[i] += _row[i];
                    }

                    break;
                case EmbeddingPooling.Last:
                    _row.CopyTo(_picked, 0);
                    break;
                case EmbeddingPooling.Cls when position == 0:
                    _row.CopyTo(_picked, 0);
                    _first = true;
                    break;
            }

            Positions++;
        }
    }
}
