using BenchmarkDotNet.Attributes;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Numerics;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Bench;

/// <summary>
/// What a speculative step costs on the CPU: one forward pass over <see cref="Tokens"/> positions with every position's
/// logits (the token fed and Tokens - 1 guesses), after 256 cached positions, on a Llama-3.2-1B-shaped model with Q8_0
/// weights (1.32 GB, written once to the temp folder; <c>KVAQ_BENCH_L1B</c> names an existing file), an FP16 cache, two
/// threads; then the cache is cut back. Tokens = 1 is a plain decode step, so the ratio of Tokens = n to it is the price of
/// n - 1 guesses: where it stays near 1, kept guesses are nearly free tokens.
/// </summary>
public class SpeculativeBatchBenchmarks : IDisposable
{
    private const int Cached = 256;
    private LlamaModel _model = null!;
    private Transformer _transformer = null!;
    private InferenceSession _session = null!;
    private int[] _batch = null!;
    private float[] _rows = null!;

    [Params(1, 2, 3, 5, 9)]
    public int Tokens { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        string path = Environment.GetEnvironmentVariable("KVAQ_BENCH_L1B") ?? Path.Combine(Path.GetTempPath(), "kvaq-bench-l1b-q8_0.gguf");
        if (!File.Exists(path))
        {
            SyntheticModelWriter.Create(SyntheticModelPreset.Find("llama-3.2-1b"), GgmlType.Q8_0, seed: 1).Write(path, threads: 2);
        }

        _model = ModelLoader.Load(path);
        _transformer = new Transformer(_model, 2);
        _session = new InferenceSession(_transformer, KvCacheFactory.Create("fp16", _transformer.CacheLayout(Cached + 16)));
        var rng = new Random(3);
        _session.Prefill([.. Enumerable.Range(0, Cached).Select(_ => rng.Next(3, _model.Config.VocabSize))]);
        _batch = [.. Enumerable.Range(0, Tokens).Select(_ => rng.Next(3, _model.Config.VocabSize))];
        _rows = new float[Tokens * _model.Config.VocabSize];
    }

    [Benchmark]
    public void Verify()
    {
        _transformer.Forward(_batch, Cached, _session.Cache, _rows, allLogits: true);
        _session.Truncate(Cached);
    }

    public void Dispose()
    {
        _session?.Dispose();
        _transformer?.Dispose();
        _model?.Dispose();
        GC.SuppressFinalize(this);
    }
}
