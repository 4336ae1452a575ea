using System.Diagnostics;
using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Cli.Bench;

/// <summary>Our engine under <c>kvaq bench</c>.</summary>
internal sealed class KvaqBenchEngine(LlamaModel model, KvPlan plan, int threads, AttentionPrecision attention = AttentionPrecision.Fp32, int? ubatch = null) : IBenchEngine
{
    private readonly Transformer _transformer = new(model, threads);
    private InferenceSession? _session;

    public string Name => "kvaq";

    public string CacheDescription => (_session?.Cache.Description ?? plan.Name) + (attention switch { AttentionPrecision.Int8 => ", int8 attention", AttentionPrecision.Int8Values => ", int8 attention + byte values", _ => string.Empty });

    public long KvBytes => _session?.Cache.ByteCount ?? 0;

    /// <summary>Tokens per prefill forward pass of the prepared session (<c>--ubatch</c>, or the session's default).</summary>
    public int PrefillBatch => Session.BatchSize;

    public void Prepare(int ctx)
    {
        _session?.Dispose();
        _session = null;
        _session = Commands.CommonOptions.Session(_transformer, KvCacheFactory.Create(plan, _transformer.CacheLayout(ctx), attention), ubatch);
    }

    public double Prefill(ReadOnlySpan<int> tokens)
    {
        var s = Session;
        s.Reset();
        long t0 = Stopwatch.GetTimestamp();
        s.Prefill(tokens);
        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    public double Decode(ReadOnlySpan<int> tokens)
    {
        var s = Session;
        long t0 = Stopwatch.GetTimestamp();
        foreach (int t in tokens)
        {
            s.Decode(t);
        }

        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    public void Dispose()
    {
        _session?.Dispose();
        _transformer.Dispose();
    }

    private InferenceSession Session => _session ?? throw new InvalidOperationException("Prepare was not called");
}
