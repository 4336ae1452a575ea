using KvAdaQuant.Numerics;

namespace KvAdaQuant.KvCache;

/// <summary>
/// Attention alone, one decode step at a time: each <see cref="Step"/> attends every KV head of one layer's cache
/// (all the query heads of each GQA group) over its first <see cref="Length"/> positions through
/// <see cref="IKvLayerCache.Attend"/>, on the caller alone or with the KV heads handed out by a <see cref="WorkerPool"/>
/// exactly as the engine's decode step hands them out (one item per KV head, each thread its own score scratch).
/// Cycling the steps over enough filled layers (<see cref="StreamedLayers"/>) makes the packed bytes come from memory
/// rather than from the last-level cache. Used by <c>kvaq bench --attention</c> and the bench project's attention
/// benchmarks. A step allocates nothing.
/// </summary>
public sealed class AttentionStepRunner : IParallelWork
{
    /// <summary>Bytes the cycled layers add up to at least (where the model has that many layers): 256 MiB, beyond any last-level cache here.</summary>
    public const long DefaultStreamBytes = 256L << 20;

    /// <summary>Positions of random keys and values <see cref="Fill"/> draws once and appends from.</summary>
    public const int FillPool = 4096;

    private const int FillBatch = 256;

    private readonly IReadOnlyList<IKvLayerCache> _layers;
    private readonly float[] _queries;
    private readonly float[] _output;
    private readonly float[][] _scores;
    private IKvLayerCache? _layer;

    /// <summary>
    /// Creates a runner over <paramref name="layers"/> (each holding at least <paramref name="length"/> positions when
    /// stepped) for <paramref name="kvHeads"/> KV heads of <paramref name="queryHeads"/> query heads each, with score
    /// scratch for up to <paramref name="threads"/> threads. The queries are q[i] = sin(0.37 i), as the attention
    /// benchmark has always used; <see cref="Queries"/> can be overwritten.
    /// </summary>
    public AttentionStepRunner(IReadOnlyList<IKvLayerCache> layers, int kvHeads, int queryHeads, int headDim, int length, int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers.Count, 1, nameof(layers));
        ArgumentOutOfRangeException.ThrowIfLessThan(kvHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(queryHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        _layers = layers;
        KvHeads = kvHeads;
        QueryHeads = queryHeads;
        HeadDim = headDim;
        Length = length;
        _queries = new float[kvHeads * queryHeads * headDim];
        for (int i = 0; i < _queries.Length; i++)
        {
            _queries[i] = (float)Math.Sin(i * 0.37);
        }

        _output = new float[_queries.Length];
        _scores = new float[threads][];
        for (int t = 0; t < threads; t++)
        {
            _scores[t] = new float[queryHeads * length];
        }
    }

    /// <summary>KV heads attended per step.</summary>
    public int KvHeads { get; }

    /// <summary>Query heads per KV head.</summary>
    public int QueryHeads { get; }

    /// <summary>Head dimension.</summary>
    public int HeadDim { get; }

    /// <summary>Positions attended per step.</summary>
    public int Length { get; }

    /// <summary>Layers the runner can step.</summary>
    public int LayerCount => _layers.Count;

    /// <summary>The queries, [KV head, query head, head dim] (the layout decode passes: query heads of one group contiguous).</summary>
    public Span<float> Queries => _queries;

    /// <summary>The last step's attention output, [KV head, query head, head dim].</summary>
    public ReadOnlySpan<float> Output => _output;

    /// <summary>
    /// One decode step of attention over layer <paramref name="layer"/>: every KV head, on the calling thread when
    /// <paramref name="pool"/> is null, else one pool item per KV head.
    /// </summary>
    public void Step(int layer, WorkerPool? pool)
    {
        _layer = _layers[layer];
        if (pool is null)
        {
            for (int g = 0; g < KvHeads; g++)
            {
                Execute(g, 0);
            }

            return;
        }

        if (pool.Threads > _scores.Length)
        {
            throw new ArgumentException($"the pool has {pool.Threads} threads but the runner has score scratch for {_scores.Length}", nameof(pool));
        }

        pool.Run(this, KvHeads);
    }

    /// <summary>Attends KV head <paramref name="index"/> of the current layer (a <see cref="WorkerPool"/> item).</summary>
    public void Execute(int index, int worker)
    {
        int span = QueryHeads * HeadDim;
        _layer!.Attend(index, _queries.AsSpan(index * span, span), QueryHeads, Length, _output.AsSpan(index * span, span), _scores[worker]);
    }

    /// <summary>Keys uniform in [-2, 2) and values in [-1, 1), drawn alternately (k[i], then v[i]) from <paramref name="rng"/>.</summary>
    public static void RandomKeysAndValues(Random rng, Span<float> k, Span<float> v)
    {
        if (k.Length != v.Length)
        {
            throw new ArgumentException($"keys ({k.Length}) and values ({v.Length}) differ in length");
        }

        for (int i = 0; i < k.Length; i++)
        {
            k[i] = (float)((rng.NextDouble() * 4) - 2);
            v[i] = (float)((rng.NextDouble() * 2) - 1);
        }
    }

    /// <summary>
    /// Appends <paramref name="positions"/> seeded random positions to each of <paramref name="layers"/>: a pool of
    /// <see cref="FillPool"/> positions of <see cref="RandomKeysAndValues"/> drawn from <c>new Random(seed)</c>, appended
    /// in batches of 256 from a window that moves with the position and the layer (layer l, position t: pool position
    /// (t + 977 l) mod (<see cref="FillPool"/> - 256)), so layers and batches differ.
    /// </summary>
    public static void Fill(IReadOnlyList<IKvLayerCache> layers, int kvDim, int positions, int seed = 7)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(kvDim, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(positions);
        var k = new float[FillPool * kvDim];
        var v = new float[FillPool * kvDim];
        RandomKeysAndValues(new Random(seed), k, v);
        for (int l = 0; l < layers.Count; l++)
        {
            for (int t = 0; t < positions; t += FillBatch)
            {
                int off = ((t + (l * 977)) % (FillPool - FillBatch)) * kvDim;
                layers[l].Append(k.AsSpan(off), v.AsSpan(off), Math.Min(FillBatch, positions - t));
            }
        }
    }

    /// <summary>
    /// The layers of <paramref name="plan"/> to fill and cycle so that a step streams from memory: the fewest, spread
    /// evenly over the model (layer floor((2i + 1) L / 2n) of L for i &lt; n), whose bytes at <paramref name="length"/>
    /// positions (the plan's accounting, <see cref="KvPlan.BytesAt"/>) add up to at least <paramref name="targetBytes"/>,
    /// or all the plan's layers where they add up to less. For a plan with the same spec in every layer this is
    /// ceil(target / bytes per layer) layers, at most the model's.
    /// </summary>
    public static int[] StreamedLayers(KvPlan plan, int kvHeads, int headDim, int length, long targetBytes = DefaultStreamBytes)
    {
        int total = plan.Layers.Count;
        for (int n = 1; n < total; n++)
        {
            var picked = Spread(n, total);
            if (Subplan(plan, picked).BytesAt(kvHeads, headDim, length) >= targetBytes)
            {
                return picked;
            }
        }

        return Spread(total, total);
    }

    /// <summary>The plan of <paramref name="layers"/> of <paramref name="plan"/> (same name and source), in that order.</summary>
    public static KvPlan Subplan(KvPlan plan, IReadOnlyList<int> layers) =>
        new(layers.Select(l => plan.Layers[l]).ToArray(), plan.Name, plan.Source);

    private static int[] Spread(int n, int total)
    {
        var picked = new int[n];
        for (int i = 0; i < n; i++)
        {
            picked[i] = (int)((((2L * i) + 1) * total) / (2L * n));
        }

        return picked;
    }
}
