namespace KvAdaQuant.Cli.Bench;

/// <summary>One engine under <c>kvaq bench</c>: a sequence it can prefill and then extend token by token.</summary>
internal interface IBenchEngine : IDisposable
{
    /// <summary>Short name used in the report (<c>kvaq</c>, <c>llama_cpp</c>).</summary>
    string Name { get; }

    /// <summary>What the cache is, e.g. <c>fp16</c> or <c>q8_0/q4_0 (flash attention)</c>.</summary>
    string CacheDescription { get; }

    /// <summary>
    /// Sequences each prefill and decode step runs (kvaq <c>--batch</c>; 1 for llama.cpp): a prefill runs the prompt in
    /// each, a decode step gives each one token, and the tokens/s reported count all of them.
    /// </summary>
    int Sequences => 1;

    /// <summary>Bytes of KV cache held for the prepared context (all sequences).</summary>
    long KvBytes { get; }

    /// <summary>Allocates a cache for <paramref name="ctx"/> positions (replacing any earlier one).</summary>
    void Prepare(int ctx);

    /// <summary>Empties the cache and runs <paramref name="tokens"/> as one prompt; returns seconds taken.</summary>
    double Prefill(ReadOnlySpan<int> tokens);

    /// <summary>Runs <paramref name="tokens"/> one at a time after the prompt; returns seconds taken.</summary>
    double Decode(ReadOnlySpan<int> tokens);
}
