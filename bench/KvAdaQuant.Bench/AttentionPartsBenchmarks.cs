using BenchmarkDotNet.Attributes;
using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// The parts of one decode step of <see cref="AttentionStepBenchmark"/> (one layer, 8 KV heads x 4 query heads,
/// single-threaded) timed apart on the quantized stores of a k4v2 or k4v4 cache: <see cref="Scores"/> (q · k of every
/// position from the packed keys), <see cref="SoftMax"/> (the softmax of the 4 score rows of every KV head) and
/// <see cref="Values"/> (the probability-weighted sum of the packed values), the int8 path's replacements for the first
/// two, <see cref="ScoresInt8"/> and <see cref="ExpSum"/>, and the byte-weight path's replacement for the exponentials
/// and the value sum, <see cref="ByteValues"/> (<c>Int8ValueKernels</c>, 2- and 4-bit values). The layers cycle as in
/// the step benchmark.
/// </summary>
[Config(typeof(AttentionBenchmarkConfig))]
public class AttentionPartsBenchmarks : IDisposable
{
    private const int KvHeads = AttentionStepBenchmark.KvHeads;
    private const int QueryHeads = AttentionStepBenchmark.QueryHeads;

    private QuantizedTensorStore[] _keys = [];
    private QuantizedTensorStore[] _int8Keys = [];
    private QuantizedTensorStore[] _values = [];
    private float[] _q = null!;
    private float[] _output = null!;
    private float[] _scores = null!;
    private float[] _max = null!;
    private float[] _sums = new float[QueryHeads];
    private int _next;

    /// <summary>Model shape (<see cref="AttentionStepBenchmark.HeadDimOf"/>).</summary>
    [Params("llama-3.2-1b", "llama-3.1-8b")]
    public string Shape { get; set; } = "llama-3.2-1b";

    /// <summary>Cached positions.</summary>
    [Params(32768)]
    public int Context { get; set; } = 32768;

    /// <summary>Cache spec (--kv syntax).</summary>
    [Params("k4v2", "k4v4")]
    public string Kv { get; set; } = "k4v2";

    /// <summary>Fills the layers with random keys and values.</summary>
    [GlobalSetup]
    public void Setup()
    {
        int hd = AttentionStepBenchmark.HeadDimOf(Shape);
        int layers = AttentionStepBenchmark.LayersFor(Shape, Kv, Context);
        var layout = new KvLayout(1, KvHeads, hd, Context);
        var spec = KvPlan.Parse(Kv, 1).Layers[0];
        _keys = new QuantizedTensorStore[layers];
        _int8Keys = new QuantizedTensorStore[layers];
        _values = new QuantizedTensorStore[layers];
        var rng = new Random(7);
        const int Batch = 256;
        var k = new float[Batch * KvHeads * hd];
        var v = new float[Batch * KvHeads * hd];
        for (int l = 0; l < layers; l++)
        {
            _keys[l] = new QuantizedTensorStore(layout, spec.K);
            _int8Keys[l] = new QuantizedTensorStore(layout, spec.K, int8Keys: true);
            _values[l] = new QuantizedTensorStore(layout, spec.V);
            for (int t = 0; t < Context; t += Batch)
            {
                AttentionStepBenchmark.RandomKeysAndValues(rng, k, v);
                int n = Math.Min(Batch, Context - t);
                _keys[l].Append(k, n);
                _int8Keys[l].Append(k, n);
                _values[l].Append(v, n);
            }
        }

        _q = Enumerable.Range(0, KvHeads * QueryHeads * hd).Select(i => (float)Math.Sin(i * 0.37) / MathF.Sqrt(hd)).ToArray();
        _output = new float[QueryHeads * hd];
        _scores = new float[KvHeads * QueryHeads * Context];
        _max = new float[KvHeads * QueryHeads];
        for (int g = 0; g < KvHeads; g++)
        {
            SoftMaxHead(g);
        }
    }

    /// <summary>Scores of every KV head of the next layer.</summary>
    [Benchmark]
    public void Scores()
    {
        var keys = _keys[Advance()];
        int span = QueryHeads * AttentionStepBenchmark.HeadDimOf(Shape);
        for (int g = 0; g < KvHeads; g++)
        {
            keys.Scores(g, _q.AsSpan(g * span, span), QueryHeads, Context, _scores.AsSpan(g * QueryHeads * Context, QueryHeads * Context));
        }
    }

    /// <summary>Scores of every KV head of the next layer with int8 queries (<see cref="AttentionPrecision.Int8"/>), with each row's maximum.</summary>
    [Benchmark]
    public void ScoresInt8()
    {
        var keys = _int8Keys[Advance()];
        int span = QueryHeads * AttentionStepBenchmark.HeadDimOf(Shape);
        for (int g = 0; g < KvHeads; g++)
        {
            keys.ScoresInt8(g, _q.AsSpan(g * span, span), QueryHeads, Context, _scores.AsSpan(g * QueryHeads * Context, QueryHeads * Context), _max.AsSpan(g * QueryHeads, QueryHeads));
        }
    }

    /// <summary>
    /// The int8 path's softmax of the 4 x 8 score rows: one exp-and-sum pass from the maxima the int8 scores return (the
    /// normalisation is folded into the value sum), in place.
    /// </summary>
    [Benchmark]
    public unsafe float ExpSum()
    {
        float total = 0;
        fixed (float* s = _scores)
        {
            for (int row = 0; row < KvHeads * QueryHeads; row++)
            {
                total += Int8AttentionKernels.ExpSum(s + ((long)row * Context), Context, _max[row]);
            }
        }

        return total;
    }

    /// <summary>Softmax of the 4 x 8 score rows (in place; the rows stay probabilities from run to run).</summary>
    [Benchmark]
    public void SoftMax()
    {
        for (int g = 0; g < KvHeads; g++)
        {
            SoftMaxHead(g);
        }
    }

    /// <summary>Weighted value sums of every KV head of the next layer.</summary>
    [Benchmark]
    public void Values()
    {
        var values = _values[Advance()];
        for (int g = 0; g < KvHeads; g++)
        {
            Array.Clear(_output);
            values.Accumulate(g, _scores.AsSpan(g * QueryHeads * Context, QueryHeads * Context), QueryHeads, Context, _output);
        }
    }

    /// <summary>
    /// The byte-weight value sums of every KV head of the next layer with the exponential fused in
    /// (<see cref="AttentionPrecision.Int8Values"/>), from the score rows and their maxima as <see cref="ScoresInt8"/>
    /// leaves them (here the rows as the setup left them: the time does not depend on the values).
    /// </summary>
    [Benchmark]
    public void ByteValues()
    {
        var values = _values[Advance()];
        for (int g = 0; g < KvHeads; g++)
        {
            Array.Clear(_output);
            values.AccumulateSoftmaxInt8(g, _scores.AsSpan(g * QueryHeads * Context, QueryHeads * Context), QueryHeads, Context, _max.AsSpan(g * QueryHeads, QueryHeads), _sums, _output);
        }
    }

    /// <inheritdoc/>
    [GlobalCleanup]
    public void Dispose()
    {
        foreach (var s in _keys.Concat(_int8Keys).Concat(_values))
        {
            s.Dispose();
        }

        _keys = [];
        _int8Keys = [];
        _values = [];
        GC.SuppressFinalize(this);
    }

    private void SoftMaxHead(int g)
    {
        for (int r = 0; r < QueryHeads; r++)
        {
            Kernels.SoftMax(_scores.AsSpan(((g * QueryHeads) + r) * Context, Context));
        }
    }

    private int Advance()
    {
        int l = _next;
        _next = (_next + 1) % _keys.Length;
        return l;
    }
}
