using System.Diagnostics;
using KvAdaQuant.LlamaCpp;

namespace KvAdaQuant.Cli.Bench;

/// <summary>llama.cpp (through LLamaSharp) under <c>kvaq bench --vs llama.cpp</c>, on the same GGUF file.</summary>
internal sealed class LlamaCppBenchEngine : IBenchEngine
{
    private readonly LlamaCppModel _model;
    private readonly LlamaCppCacheType _typeK;
    private readonly LlamaCppCacheType _typeV;
    private readonly int _threads;
    private readonly int _sequences;
    private readonly float[] _logits;
    private readonly int[] _step;
    private LlamaCppContext? _context;

    public LlamaCppBenchEngine(string ggufPath, LlamaCppCacheType typeK, LlamaCppCacheType typeV, int threads, int sequences = 1)
    {
        Runtime = LlamaCppRuntime.Load();
        _model = LlamaCppModel.Load(ggufPath);
        _typeK = typeK;
        _typeV = typeV;
        _threads = threads;
        _sequences = sequences;
        _logits = new float[sequences * _model.VocabSize];
        _step = new int[sequences];
    }

    public string Name => "llama_cpp";

    public LlamaCppRuntimeInfo Runtime { get; }

    public string CacheDescription => $"{LlamaCppCacheTypes.Name(_typeK)}/{LlamaCppCacheTypes.Name(_typeV)}, flash attention on";

    public int Sequences => _sequences;

    public long KvBytes => _context?.KvBytes ?? 0;

    public void Prepare(int ctx)
    {
        _context?.Dispose();
        _context = null;
        try
        {
            _context = _model.CreateContext(new LlamaCppContextOptions
            {
                ContextSize = ctx * _sequences,
                Sequences = _sequences,
                TypeK = _typeK,
                TypeV = _typeV,
                FlashAttention = true,
                Threads = _threads,
            });
        }
        catch (LlamaCppException e)
        {
            throw new InvalidDataException($"--vs llama.cpp: {e.Message}", e);
        }
    }

    public double Prefill(ReadOnlySpan<int> tokens)
    {
        var c = Context;
        c.Clear();
        long t0 = Stopwatch.GetTimestamp();
        for (int s = 0; s < _sequences; s++)
        {
            c.Evaluate(tokens, _logits, allLogits: false, s);
        }

        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    public double Decode(ReadOnlySpan<int> tokens)
    {
        var c = Context;
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (_sequences == 1)
            {
                c.Evaluate(tokens.Slice(i, 1), _logits, allLogits: false);
            }
            else
            {
                // Every sequence the same token a step, one llama_decode for all (as kvaq's --batch).
                Array.Fill(_step, tokens[i]);
                c.EvaluateStep(_step, _logits);
            }
        }

        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    public void Dispose()
    {
        _context?.Dispose();
        _model.Dispose();
    }

    private LlamaCppContext Context => _context ?? throw new InvalidOperationException("Prepare was not called");
}
