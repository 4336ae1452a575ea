using System.Diagnostics;
using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Cli.Bench;

/// <summary>
/// Our engine under <c>kvaq bench</c>: one sequence, or with <paramref name="sequences"/> &gt; 1 (<c>--batch</c>) that many,
/// each with its own cache, prefilled one after another and decoded together one step a forward pass
/// (<see cref="BatchDecoder"/>, llama-batched-bench's text generation).
/// </summary>
internal sealed class KvaqBenchEngine(LlamaModel model, KvPlan plan, int threads, AttentionPrecision attention = AttentionPrecision.Fp32, int? ubatch = null, int sequences = 1) : IBenchEngine
{
    private readonly Transformer _transformer = new(model, threads);
    private readonly int _sequences = sequences >= 1 ? sequences : throw new ArgumentOutOfRangeException(nameof(sequences), $"--batch must be at least 1, got {sequences}");
    private InferenceSession[] _sessions = [];
    private BatchDecoder? _decoder;
    private int[] _step = [];

    public string Name => "kvaq";

    public string CacheDescription => (_sessions.Length > 0 ? _sessions[0].Cache.Description : plan.Name) + (attention switch { AttentionPrecision.Int8 => ", int8 attention", AttentionPrecision.Int8Values => ", int8 attention + byte values", _ => string.Empty });

    public int Sequences => _sequences;

    public long KvBytes => _sessions.Sum(s => s.Cache.ByteCount);

    /// <summary>Tokens per prefill forward pass of the prepared session (<c>--ubatch</c>, or the session's default).</summary>
    public int PrefillBatch => Sessions[0].BatchSize;

    public void Prepare(int ctx)
    {
        DisposeSessions();
        var sessions = new List<InferenceSession>();
        try
        {
            for (int i = 0; i < _sequences; i++)
            {
                sessions.Add(Commands.CommonOptions.Session(_transformer, KvCacheFactory.Create(plan, _transformer.CacheLayout(ctx), attention), ubatch));
            }
        }
        catch
        {
            sessions.ForEach(s => s.Dispose());
            throw;
        }

        _sessions = [.. sessions];
        _decoder = new BatchDecoder(_transformer);
        _step = new int[_sequences];
    }

    public double Prefill(ReadOnlySpan<int> tokens)
    {
        var sessions = Sessions;
        long t0 = Stopwatch.GetTimestamp();
        foreach (var s in sessions)
        {
            s.Reset();
            s.Prefill(tokens);
        }

        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    public double Decode(ReadOnlySpan<int> tokens)
    {
        var sessions = Sessions;
        long t0 = Stopwatch.GetTimestamp();
        // Every sequence takes the same token a step (the work per step does not depend on which); one sequence is a
        // single-token decode.
        var step = _step;
        foreach (int t in tokens)
        {
            Array.Fill(step, t);
            _decoder!.Decode(sessions, step);
        }

        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    public void Dispose()
    {
        DisposeSessions();
        _transformer.Dispose();
    }

    private void DisposeSessions()
    {
        foreach (var s in _sessions)
        {
            s.Dispose();
        }

        _sessions = [];
    }

    private InferenceSession[] Sessions => _sessions.Length > 0 ? _sessions : throw new InvalidOperationException("Prepare was not called");
}
