using KvAdaQuant.Analysis;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Analysis;

/// <summary>
/// Test double of the quantization layer: per-row asymmetric min/max round-to-nearest (or exact when
/// <see cref="Exact"/>), and a cache that stores the round-tripped K or V in full precision.
/// </summary>
internal sealed class RowAffineProbe : IKvQuantizationProbe
{
    public bool Exact { get; init; }

    public bool RefuseKeys { get; init; }

    public string Describe(KvBits bits) => Exact ? "exact (no quantization)" : $"test: per-row affine {bits.Name()}-bit";

    public void RoundTrip(bool keys, KvBits bits, ReadOnlySpan<float> rows, int tokens, int headDim, Span<float> dst)
    {
        for (int t = 0; t < tokens; t++)
        {
            Quantize(bits, rows.Slice(t * headDim, headDim), dst.Slice(t * headDim, headDim));
        }
    }

    public IKvCache CreateCache(KvLayout layout, KvBits? keyBits, KvBits? valueBits) =>
        RefuseKeys && keyBits is not null ? throw new KvCacheException("test: refusing keys") : new RoundTripCache(this, layout, keyBits, valueBits);

    private void Quantize(KvBits bits, ReadOnlySpan<float> x, Span<float> y)
    {
        if (Exact)
        {
            x.CopyTo(y);
            return;
        }

        float min = float.MaxValue, max = float.MinValue;
        foreach (float v in x)
        {
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }

        int levels = bits.Levels() - 1;
        float scale = (max - min) / levels;
        for (int i = 0; i < x.Length; i++)
        {
            y[i] = scale == 0 ? x[i] : min + (MathF.Round((x[i] - min) / scale) * scale);
        }
    }

    private sealed class RoundTripCache : IKvCache
    {
        private readonly FullPrecisionKvCache _inner;
        private readonly IKvLayerCache[] _layers;

        public RoundTripCache(RowAffineProbe probe, KvLayout layout, KvBits? keyBits, KvBits? valueBits)
        {
            _inner = new FullPrecisionKvCache(layout, half: false);
            _layers = _inner.Layers.Select(l => (IKvLayerCache)new Layer(probe, l, layout, keyBits, valueBits)).ToArray();
            Description = $"test k{keyBits?.Name() ?? "32"}v{valueBits?.Name() ?? "32"}";
        }

        public KvLayout Layout => _inner.Layout;

        public IReadOnlyList<IKvLayerCache> Layers => _layers;

        public string Description { get; }

        public void Dispose() => _inner.Dispose();
    }

    private sealed class Layer(RowAffineProbe probe, IKvLayerCache inner, KvLayout layout, KvBits? keyBits, KvBits? valueBits) : IKvLayerCache
    {
        public int Length => inner.Length;

        public long ByteCount => inner.ByteCount;

        public void Append(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
        {
            var k = keys[..(tokens * layout.KvDim)].ToArray();
            var v = values[..(tokens * layout.KvDim)].ToArray();
            if (keyBits is { } kb)
            {
                probe.RoundTrip(true, kb, keys, tokens * layout.KvHeads, layout.HeadDim, k);
            }

            if (valueBits is { } vb)
            {
                probe.RoundTrip(false, vb, values, tokens * layout.KvHeads, layout.HeadDim, v);
            }

            inner.Append(k, v, tokens);
        }

        public void Attend(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores) =>
            inner.Attend(kvHead, queries, queryHeads, length, output, scores);

        public void ReadKeys(int kvHead, int start, int count, Span<float> dst) => inner.ReadKeys(kvHead, start, count, dst);

        public void ReadValues(int kvHead, int start, int count, Span<float> dst) => inner.ReadValues(kvHead, start, count, dst);

        public void Clear() => inner.Clear();
    }
}
