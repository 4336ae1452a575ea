using System.Buffers;
using System.Numerics.Tensors;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Analysis;

/// <summary>
/// A cache that returns K and V exactly as a quantized cache of the given specs would, by storing each
/// appended row after a <see cref="KvQuantizer"/> round trip in an FP32 store. Exact for per-token specs without
/// a residual window or sinks (each row is then quantized on its own as it arrives); other specs are refused.
/// Attention subtracts the largest score before exponentiating, so the large logits that coarse keys can
/// produce do not overflow.
/// </summary>
internal sealed class RoundTripKvCache : IKvCache
{
    private readonly FullPrecisionKvCache _inner;
    private readonly IKvLayerCache[] _layers;

    public RoundTripKvCache(KvLayout layout, KvSpec keys, KvSpec values)
    {
        foreach (var s in new[] { keys, values })
        {
            if (!KvQuantizerProbe.CanEmulate(s))
            {
                throw new NotSupportedException($"spec {s}: the analysis cache emulates per-token specs without residual window or sinks only");
            }

            if (s.Problem(layout.HeadDim) is { } problem)
            {
                throw new ArgumentException($"spec {s}: {problem}");
            }
        }

        _inner = new FullPrecisionKvCache(layout, half: false);
        _layers = _inner.Layers.Select(l => (IKvLayerCache)new Layer(l, layout, keys, values)).ToArray();
        Description = $"k{keys.Bits.Name()}v{values.Bits.Name()}";
    }

    public KvLayout Layout => _inner.Layout;

    public IReadOnlyList<IKvLayerCache> Layers => _layers;

    public string Description { get; }

    public void Dispose() => _inner.Dispose();

    private sealed class Layer(IKvLayerCache inner, KvLayout layout, KvSpec keySpec, KvSpec valueSpec) : IKvLayerCache
    {
        private float[] _k = [];
        private float[] _v = [];

        public int Length => inner.Length;

        public long ByteCount => inner.ByteCount;

        public void Append(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
        {
            int n = tokens * layout.KvDim;
            if (_k.Length < n)
            {
                _k = new float[n];
                _v = new float[n];
            }

            // Rows of all heads are [tokens * kvHeads, headDim]; per-token groups never cross a head.
            KvQuantizer.RoundTrip(keys, tokens * layout.KvHeads, layout.HeadDim, keySpec, _k);
            KvQuantizer.RoundTrip(values, tokens * layout.KvHeads, layout.HeadDim, valueSpec, _v);
            inner.Append(_k.AsSpan(0, n), _v.AsSpan(0, n), tokens);
        }

        public void Attend(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores)
        {
            int hd = layout.HeadDim;
            float[] rows = ArrayPool<float>.Shared.Rent(length * hd);
            try
            {
                var kv = rows.AsSpan(0, length * hd);
                inner.ReadKeys(kvHead, 0, length, kv);
                for (int r = 0; r < queryHeads; r++)
                {
                    var q = queries.Slice(r * hd, hd);
                    var s = scores.Slice(r * length, length);
                    for (int j = 0; j < length; j++)
                    {
                        s[j] = TensorPrimitives.Dot(q, kv.Slice(j * hd, hd)) * layout.Scale;
                    }

                    TensorPrimitives.Subtract(s, TensorPrimitives.Max(s), s);
                    TensorPrimitives.Exp(s, s);
                    TensorPrimitives.Divide(s, TensorPrimitives.Sum(s), s);
                }

                inner.ReadValues(kvHead, 0, length, kv);
                output[..(queryHeads * hd)].Clear();
                for (int j = 0; j < length; j++)
                {
                    var v = kv.Slice(j * hd, hd);
                    for (int r = 0; r < queryHeads; r++)
                    {
                        var o = output.Slice(r * hd, hd);
                        TensorPrimitives.MultiplyAdd(v, scores[(r * length) + j], o, o);
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(rows);
            }
        }

        public void ReadKeys(int kvHead, int start, int count, Span<float> dst) => inner.ReadKeys(kvHead, start, count, dst);

        public void ReadValues(int kvHead, int start, int count, Span<float> dst) => inner.ReadValues(kvHead, start, count, dst);

        public void Clear() => inner.Clear();
    }
}
