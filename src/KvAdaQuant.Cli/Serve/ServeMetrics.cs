using System.Globalization;
using System.Text;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// What <c>kvaq serve</c> has done since it started, for <c>GET /metrics</c> (<c>--metrics</c>) in Prometheus' text
/// format under llama-server's names (<c>llamacpp:prompt_tokens_total</c>, <c>llamacpp:tokens_predicted_total</c>, ...),
/// with kvaq's KV-cache figures beside them. Counts come from the requests' own timings (<see cref="GenerationResult"/>)
/// and, on the CPU, the engine's forward passes (<see cref="Transformer.ForwardPasses"/>) from the server's start.
/// </summary>
internal sealed class ServeMetrics
{
    private readonly object _gate = new();
    private readonly Transformer? _transformer;
    private readonly long _passes0;
    private readonly long _sequences0;
    private long _promptTokens;
    private double _promptSeconds;
    private long _predictedTokens;
    private double _predictedSeconds;
    private long _requests;
    private int _processing;
    private int _deferred;

    /// <param name="transformer">The CPU engine whose forward passes are counted from now, or null (the GPU).</param>
    public ServeMetrics(Transformer? transformer)
    {
        _transformer = transformer;
        _passes0 = transformer?.ForwardPasses ?? 0;
        _sequences0 = transformer?.SequencesRun ?? 0;
    }

    /// <summary>A request waits for a slot (call <see cref="Started"/> or <see cref="Left"/> after).</summary>
    public void Queued() => Interlocked.Increment(ref _deferred);

    /// <summary>A queued request left before it got a slot.</summary>
    public void Left() => Interlocked.Decrement(ref _deferred);

    /// <summary>A queued request got a slot.</summary>
    public void Started()
    {
        Interlocked.Decrement(ref _deferred);
        Interlocked.Increment(ref _processing);
    }

    /// <summary>A run (one choice of a request) ended.</summary>
    public void Record(GenerationResult run)
    {
        lock (_gate)
        {
            _promptTokens += run.PrefillTokens;
            _promptSeconds += run.PrefillSeconds;
            _predictedTokens += run.Tokens.Count;
            _predictedSeconds += run.DecodeSeconds;
        }
    }

    /// <summary>A request that got a slot gave it back.</summary>
    public void Finished()
    {
        Interlocked.Increment(ref _requests);
        Interlocked.Decrement(ref _processing);
    }

    /// <summary>The metrics in Prometheus' text exposition format (version 0.0.4).</summary>
    public string Render(ServedModel model)
    {
        long promptTokens, predictedTokens, requests = Interlocked.Read(ref _requests);
        double promptSeconds, predictedSeconds;
        lock (_gate)
        {
            (promptTokens, promptSeconds, predictedTokens, predictedSeconds) = (_promptTokens, _promptSeconds, _predictedTokens, _predictedSeconds);
        }

        var slots = model.SlotStates();
        var text = new StringBuilder();
        void Metric(string name, string type, string help, double value)
        {
            text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            text.Append(name).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }

        Metric("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed (not taken from a cache).", promptTokens);
        Metric("llamacpp:prompt_seconds_total", "counter", "Prompt process time.", promptSeconds);
        Metric("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.", predictedTokens);
        Metric("llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time.", predictedSeconds);
        if (_transformer is not null)
        {
            long passes = _transformer.ForwardPasses - _passes0;
            long sequences = _transformer.SequencesRun - _sequences0;
            Metric("llamacpp:n_decode_total", "counter", "Total number of forward passes (llama_decode() calls).", passes);
            Metric("llamacpp:n_busy_slots_per_decode", "gauge", "Average number of busy slots per forward pass.", passes == 0 ? 0 : (double)sequences / passes);
        }

        Metric("llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.", promptSeconds == 0 ? 0 : promptTokens / promptSeconds);
        Metric("llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.", predictedSeconds == 0 ? 0 : predictedTokens / predictedSeconds);
        Metric("llamacpp:requests_processing", "gauge", "Number of requests processing.", Volatile.Read(ref _processing));
        Metric("llamacpp:requests_deferred", "gauge", "Number of requests waiting for a slot.", Volatile.Read(ref _deferred));
        Metric("kvaq:requests_total", "counter", "Generation requests that got a slot and ended (each with all its choices).", requests);
        Metric("kvaq:slots", "gauge", "Slots (requests served at once, kvaq serve --parallel).", slots.Count);
        Metric("kvaq:kv_cache_bytes", "gauge", $"Bytes the tokens held in the slots' KV caches take ({model.Kv}).", slots.Sum(s => s.KvBytes));
        Metric("kvaq:kv_cache_tokens", "gauge", "Tokens the slots' KV caches hold.", slots.Sum(s => s.CacheTokens));
        return text.ToString();
    }
}
