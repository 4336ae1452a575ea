namespace KvAdaQuant.KvCache;

/// <summary>
/// A cache that multiplies every key and value element it is given by <c>1 + relative·u</c> (<c>u</c> uniform in [-1, 1),
/// a deterministic function of the seed, layer, position and element) before the wrapped cache stores it. Used to measure
/// how strongly a cache amplifies tiny differences in its inputs: a quantized cache turns a difference that moves a value
/// across a rounding boundary into a whole quantization step.
/// </summary>
public sealed class PerturbedKvCache : IKvCache
{
    private readonly IKvCache _inner;
    private readonly IKvLayerCache[] _layers;

    /// <summary>Wraps <paramref name="inner"/> (owned: disposed with this cache).</summary>
    /// <param name="inner">The cache that stores the perturbed rows.</param>
    /// <param name="relative">Largest relative change of an element, in [0, 1).</param>
    /// <param name="seed">Selects the noise pattern; the same seed gives the same perturbation.</param>
    public PerturbedKvCache(IKvCache inner, double relative, int seed)
    {
        ArgumentNullException.ThrowIfNull(inner);
        if (!(relative >= 0 && relative < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(relative), relative, "the relative perturbation must be in [0, 1)");
        }

        _inner = inner;
        Relative = relative;
        _layers = inner.Layers.Select((l, i) => (IKvLayerCache)new Layer(l, relative, seed, i)).ToArray();
    }

    /// <summary>Largest relative change of an element.</summary>
    public double Relative { get; }

    /// <inheritdoc/>
    public KvLayout Layout => _inner.Layout;

    /// <inheritdoc/>
    public IReadOnlyList<IKvLayerCache> Layers => _layers;

    /// <inheritdoc/>
    public string Description => $"{_inner.Description}, inputs perturbed by up to {Relative:G3} relative";

    /// <inheritdoc/>
    public void Dispose() => _inner.Dispose();

    /// <summary>The multiplier <c>1 + relative·u</c> for one element (exposed for tests).</summary>
    public static float Factor(double relative, int seed, int layer, int position, int element, bool value)
    {
        // Bit fields XORed, then the SplitMix64 finalizer. The fields overlap only for positions >= 4,096 (bits 32+ of
        // position << 20 meet the seed's), where two (seed, position) pairs can share a pattern: harmless for a noise
        // source, and kept so that the published sensitivities stay reproducible.
        ulong x = ((ulong)(uint)seed << 32) ^ ((ulong)(uint)layer << 48) ^ ((ulong)(uint)position << 20) ^ (uint)element ^ (value ? 0x8000_0000_0000_0000UL : 0);
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        x ^= x >> 31;
        double u = ((x >> 11) * (1.0 / (1UL << 53)) * 2) - 1;
        return (float)(1 + (relative * u));
    }

    private sealed class Layer(IKvLayerCache inner, double relative, int seed, int index) : IKvLayerCache
    {
        private float[] _k = [];
        private float[] _v = [];

        public int Length => inner.Length;

        public long ByteCount => inner.ByteCount;

        public void Append(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
        {
            if (_k.Length < keys.Length)
            {
                _k = new float[keys.Length];
            }

            if (_v.Length < values.Length)
            {
                _v = new float[values.Length];
            }

            int kw = tokens == 0 ? 0 : keys.Length / tokens, vw = tokens == 0 ? 0 : values.Length / tokens;
            for (int t = 0; t < tokens; t++)
            {
                int pos = inner.Length + t;
                for (int e = 0; e < kw; e++)
                {
                    _k[(t * kw) + e] = keys[(t * kw) + e] * Factor(relative, seed, index, pos, e, false);
                }

                for (int e = 0; e < vw; e++)
                {
                    _v[(t * vw) + e] = values[(t * vw) + e] * Factor(relative, seed, index, pos, e, true);
                }
            }

            inner.Append(_k.AsSpan(0, keys.Length), _v.AsSpan(0, values.Length), tokens);
        }

        public void Attend(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores) =>
            inner.Attend(kvHead, queries, queryHeads, length, output, scores);

        public void AttendCausal(int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch) =>
            inner.AttendCausal(kvHead, queries, queryStride, queryHeads, firstLength, tokens, output, outputStride, scratch);

        public int CausalScratchFloats(int queryHeads, int firstLength, int tokens) => inner.CausalScratchFloats(queryHeads, firstLength, tokens);

        public void ReadKeys(int kvHead, int start, int count, Span<float> dst) => inner.ReadKeys(kvHead, start, count, dst);

        public void ReadValues(int kvHead, int start, int count, Span<float> dst) => inner.ReadValues(kvHead, start, count, dst);

        public void Clear() => inner.Clear();
    }
}
