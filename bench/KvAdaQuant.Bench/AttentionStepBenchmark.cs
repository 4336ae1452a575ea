using BenchmarkDotNet.Attributes;
using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// One decode step of attention for one whole layer (8 KV heads, 4 query heads each) of a Llama-3.2-1B-shaped
/// (head dim 64) or Llama-3.1-8B-shaped (head dim 128) model, on <see cref="Threads"/> threads (1: the caller
/// alone; more: the KV heads handed out by the engine's <see cref="WorkerPool"/> as decode does, each thread with
/// its own score scratch), read straight from the cache over
/// random keys and values. Each invocation attends the next of <see cref="Layers"/> filled layers, so the bytes
/// read per step stream from memory rather than from the last-level cache (up to the model's layer count, and
/// at least 256 MB in all where the model has that many layers). The CacheMB, GB/s and %Triad columns
/// (<see cref="AttentionBenchmarkConfig"/>) give the bytes of K and V one step reads (packed codes, scales, zero
/// points), that over the median time, and that as a share of <see cref="TriadBenchmark"/>'s bandwidth in the same run.
/// The filling, the layer count and the step itself are the library's <see cref="AttentionStepRunner"/>, which
/// <c>kvaq bench --attention</c> runs too.
/// </summary>
public abstract class AttentionStepBenchmark : IDisposable
{
    /// <summary>KV heads per layer (both shapes).</summary>
    public const int KvHeads = 8;

    /// <summary>Query heads per KV head (both shapes).</summary>
    public const int QueryHeads = 4;

    private IDisposable[] _owners = [];
    private AttentionStepRunner? _runner;
    private WorkerPool? _pool;
    private int _next;

    /// <summary>Model shape: llama-3.2-1b (head dim 64, 16 layers) or llama-3.1-8b (head dim 128, 32 layers).</summary>
    public abstract string Shape { get; set; }

    /// <summary>Cached positions.</summary>
    public abstract int Context { get; set; }

    /// <summary>Cache spec (--kv syntax).</summary>
    public abstract string Kv { get; set; }

    /// <summary>Whether the fused kernels run (false: the row-at-a-time path, for an A/B in the same run).</summary>
    public abstract bool Fused { get; set; }

    /// <summary>Threads attending the step's KV heads (1 = single-threaded, no pool).</summary>
    public virtual int Threads { get; set; } = 1;

    /// <summary>
    /// Attention precision of quantized caches: fp32 (default), int8 (<see cref="AttentionPrecision.Int8"/>) or
    /// int8-values (<see cref="AttentionPrecision.Int8Values"/>).
    /// </summary>
    public virtual string Attention { get; set; } = "fp32";

    /// <summary>Layers filled and cycled through.</summary>
    public int Layers => LayersFor(Shape, Kv, Context);

    /// <summary>Head dimension of a shape.</summary>
    public static int HeadDimOf(string shape) => shape switch
    {
        "llama-3.2-1b" => 64,
        "llama-3.1-8b" => 128,
        _ => throw new ArgumentException($"unknown shape {shape}"),
    };

    /// <summary>Layers of a shape.</summary>
    public static int ModelLayersOf(string shape) => shape == "llama-3.2-1b" ? 16 : 32;

    /// <summary>Bytes of K and V one step (one layer, every KV head) reads for a spec and context.</summary>
    public static long CacheBytes(string shape, string kv, int context) => KvPlan.Parse(kv, 1).BytesAt(KvHeads, HeadDimOf(shape), context);

    /// <summary>Layers cycled through: enough for 256 MB, at most the model's (<see cref="AttentionStepRunner.StreamedLayers"/>).</summary>
    public static int LayersFor(string shape, string kv, int context) =>
        AttentionStepRunner.StreamedLayers(KvPlan.Parse(kv, ModelLayersOf(shape)), KvHeads, HeadDimOf(shape), context).Length;

    /// <summary>Keys uniform in [-2, 2) and values in [-1, 1) (<see cref="AttentionStepRunner.RandomKeysAndValues"/>).</summary>
    public static void RandomKeysAndValues(Random rng, float[] k, float[] v) => AttentionStepRunner.RandomKeysAndValues(rng, k, v);

    /// <summary>Fills <see cref="Layers"/> layers with <see cref="Context"/> random positions.</summary>
    [GlobalSetup]
    public void Setup()
    {
        int hd = HeadDimOf(Shape);
        int layers = Layers;
        var layout = new KvLayout(1, KvHeads, hd, Context);
        var plan = KvPlan.Parse(Kv, 1);
        var caches = new IKvLayerCache[layers];
        _owners = new IDisposable[layers];
        for (int l = 0; l < layers; l++)
        {
            IKvLayerCache layer = plan.IsUniformFullPrecision
                ? new FullPrecisionKvStore(layout, plan.Layers[0].K.Bits == Quantization.KvBits.Fp16, Fused)
                : new QuantizedKvStore(layout, plan.Layers[0], Fused, Attention switch { "int8" => AttentionPrecision.Int8, "int8-values" => AttentionPrecision.Int8Values, _ => AttentionPrecision.Fp32 });
            caches[l] = layer;
            _owners[l] = (IDisposable)layer;
        }

        AttentionStepRunner.Fill(caches, layout.KvDim, Context);
        _runner = new AttentionStepRunner(caches, KvHeads, QueryHeads, hd, Context, Threads);
        _pool = Threads > 1 ? new WorkerPool(Threads) : null;
    }

    /// <summary>One decode step of one layer over the whole context (every KV head).</summary>
    [Benchmark]
    public void DecodeStep()
    {
        _runner!.Step(_next, _pool);
        _next = (_next + 1) % _runner.LayerCount;
    }

    /// <inheritdoc/>
    [GlobalCleanup]
    public void Dispose()
    {
        foreach (var o in _owners)
        {
            o.Dispose();
        }

        _owners = [];
        _pool?.Dispose();
        _pool = null;
        GC.SuppressFinalize(this);
    }
}
