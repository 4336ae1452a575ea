using KvAdaQuant.Engine;
using KvAdaQuant.Model;

namespace KvAdaQuant.Analysis;

/// <summary>
/// Records a forward pass: per layer the keys before and after RoPE and the values ([tokens, KvDim]), and
/// optionally the attention output ([tokens, QDim]) and the residual stream after the layer ([tokens, Dim]).
/// Positions must arrive in order from 0 (one sequence, any batching).
/// </summary>
public sealed class ForwardCapture : IForwardObserver
{
    private readonly ModelConfig _config;
    private readonly float[][] _keys;
    private readonly float[][] _keysPre;
    private readonly float[][] _values;
    private readonly float[][]? _attention;
    private readonly float[][]? _residual;
    private readonly int[] _filled;

    /// <summary>Creates a capture of up to <paramref name="capacity"/> positions of a model shaped <paramref name="config"/>.</summary>
    public ForwardCapture(ModelConfig config, int capacity, bool keysAndValues = true, bool activations = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        _config = config;
        Capacity = capacity;
        int layers = config.Layers;
        float[][] Alloc(int width, bool on) => Enumerable.Range(0, layers).Select(_ => on ? new float[(long)capacity * width] : []).ToArray();
        _keys = Alloc(config.KvDim, keysAndValues);
        _keysPre = Alloc(config.KvDim, keysAndValues);
        _values = Alloc(config.KvDim, keysAndValues);
        CapturesKeysAndValues = keysAndValues;
        if (activations)
        {
            _attention = Alloc(config.QDim, true);
            _residual = Alloc(config.Dim, true);
        }

        _filled = new int[layers];
    }

    /// <summary>Most positions held.</summary>
    public int Capacity { get; }

    /// <summary>Whether K and V are recorded.</summary>
    public bool CapturesKeysAndValues { get; }

    /// <summary>Whether attention outputs and residuals are recorded.</summary>
    public bool CapturesActivations => _attention is not null;

    /// <summary>Positions recorded (those of the last layer).</summary>
    public int Length => _filled[^1];

    /// <summary>The model shape.</summary>
    public ModelConfig Config => _config;

    /// <summary>All KV heads of <paramref name="kind"/> in <paramref name="layer"/>, [Length, KvDim].</summary>
    public ReadOnlySpan<float> Tensor(int layer, KvTensorKind kind)
    {
        if (!CapturesKeysAndValues)
        {
            throw new InvalidOperationException("this capture does not record keys and values");
        }

        var src = kind switch
        {
            KvTensorKind.Keys => _keys,
            KvTensorKind.KeysPreRope => _keysPre,
            _ => _values,
        };
        return src[layer].AsSpan(0, Length * _config.KvDim);
    }

    /// <summary>One KV head of <paramref name="kind"/> in <paramref name="layer"/> copied out as a [Length, HeadDim] matrix.</summary>
    public float[] Head(int layer, KvTensorKind kind, int head)
    {
        int hd = _config.HeadDim, kvd = _config.KvDim;
        var all = Tensor(layer, kind);
        var dst = new float[Length * hd];
        for (int t = 0; t < Length; t++)
        {
            all.Slice((t * kvd) + (head * hd), hd).CopyTo(dst.AsSpan(t * hd, hd));
        }

        return dst;
    }

    /// <summary>Attention output of <paramref name="layer"/>, [Length, QDim].</summary>
    public ReadOnlySpan<float> Attention(int layer) =>
        (_attention ?? throw new InvalidOperationException("this capture does not record activations"))[layer].AsSpan(0, Length * _config.QDim);

    /// <summary>Residual stream after <paramref name="layer"/>, [Length, Dim].</summary>
    public ReadOnlySpan<float> Residual(int layer) =>
        (_residual ?? throw new InvalidOperationException("this capture does not record activations"))[layer].AsSpan(0, Length * _config.Dim);

    /// <inheritdoc/>
    public void OnKeyValues(int layer, int pos0, int tokens, ReadOnlySpan<float> keysPreRope, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        int kvd = _config.KvDim;
        Check(layer, pos0, tokens);
        if (CapturesKeysAndValues)
        {
            keys[..(tokens * kvd)].CopyTo(_keys[layer].AsSpan(pos0 * kvd));
            keysPreRope[..(tokens * kvd)].CopyTo(_keysPre[layer].AsSpan(pos0 * kvd));
            values[..(tokens * kvd)].CopyTo(_values[layer].AsSpan(pos0 * kvd));
        }
    }

    /// <inheritdoc/>
    public void OnAttentionOutput(int layer, int pos0, int tokens, ReadOnlySpan<float> attention)
    {
        if (_attention is not null)
        {
            int w = _config.QDim;
            attention[..(tokens * w)].CopyTo(_attention[layer].AsSpan(pos0 * w));
        }
    }

    /// <inheritdoc/>
    public void OnResidual(int layer, int pos0, int tokens, ReadOnlySpan<float> residual)
    {
        if (_residual is not null)
        {
            int w = _config.Dim;
            residual[..(tokens * w)].CopyTo(_residual[layer].AsSpan(pos0 * w));
        }

        _filled[layer] = pos0 + tokens;
    }

    private void Check(int layer, int pos0, int tokens)
    {
        if (pos0 != _filled[layer])
        {
            throw new InvalidOperationException($"layer {layer}: positions must arrive in order; expected {_filled[layer]}, got {pos0}");
        }

        if (pos0 + tokens > Capacity)
        {
            throw new InvalidOperationException($"capture holds {Capacity} positions; {pos0} + {tokens} do not fit");
        }
    }
}
