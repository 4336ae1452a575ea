using BenchmarkDotNet.Attributes;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Bench;

/// <summary>
/// One decode step of attention for one KV head of a Llama-3-8B-shaped layer (head dim 128, 4 query heads per KV
/// head): scores against every cached key, softmax, weighted sum of every cached value, read straight from the
/// packed cache. The CacheMB and GB/s columns give the bytes of K and V read per step and that over the mean time.
/// </summary>
[Config(typeof(AttentionBenchmarkConfig))]
public class AttentionBenchmarks : IDisposable
{
    /// <summary>Head dimension.</summary>
    public const int HeadDim = 128;

    /// <summary>Query heads per KV head.</summary>
    public const int QueryHeads = 4;

    private IKvCache _cache = null!;
    private float[] _q = null!;
    private float[] _output = null!;
    private float[] _scores = null!;

    /// <summary>Cached positions.</summary>
    [Params(512, 2048, 8192, 32768)]
    public int Context { get; set; }

    /// <summary>Cache spec (--kv syntax).</summary>
    [Params("fp32", "fp16", "k8v8", "k4v4", "k4v2", "k2v2", "k2v4")]
    public string Kv { get; set; } = "fp32";

    /// <summary>Bytes of K and V one step reads for a spec and context.</summary>
    public static long CacheBytes(string kv, int context) => KvPlan.Parse(kv, 1).BytesAt(1, HeadDim, context);

    /// <summary>Fills the cache with <see cref="Context"/> random positions.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var layout = new KvLayout(1, 1, HeadDim, Context);
        _cache = KvCacheFactory.Create(Kv, layout);
        var rng = new Random(7);
        const int Batch = 256;
        var k = new float[Batch * HeadDim];
        var v = new float[Batch * HeadDim];
        for (int t = 0; t < Context; t += Batch)
        {
            for (int i = 0; i < k.Length; i++)
            {
                k[i] = (float)((rng.NextDouble() * 4) - 2);
                v[i] = (float)((rng.NextDouble() * 2) - 1);
            }

            _cache.Layers[0].Append(k, v, Math.Min(Batch, Context - t));
        }

        _q = Enumerable.Range(0, QueryHeads * HeadDim).Select(i => (float)Math.Sin(i * 0.37)).ToArray();
        _output = new float[QueryHeads * HeadDim];
        _scores = new float[QueryHeads * Context];
    }

    /// <summary>One decode step over the whole context.</summary>
    [Benchmark]
    public void DecodeStep() => _cache.Layers[0].Attend(0, _q, QueryHeads, Context, _output, _scores);

    /// <inheritdoc/>
    [GlobalCleanup]
    public void Dispose()
    {
        _cache?.Dispose();
        GC.SuppressFinalize(this);
    }
}
