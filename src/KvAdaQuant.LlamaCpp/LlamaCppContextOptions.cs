namespace KvAdaQuant.LlamaCpp;

/// <summary>How to build a llama.cpp context: size, cache element types, threads, attention kernel.</summary>
public sealed record LlamaCppContextOptions
{
    /// <summary>Token capacity of the KV cache.</summary>
    public required int ContextSize { get; init; }

    /// <summary>Element type of the K cache.</summary>
    public LlamaCppCacheType TypeK { get; init; } = LlamaCppCacheType.F16;

    /// <summary>Element type of the V cache.</summary>
    public LlamaCppCacheType TypeV { get; init; } = LlamaCppCacheType.F16;

    /// <summary>
    /// Flash attention: null picks on when the V cache is quantized (llama.cpp requires it then) and off
    /// otherwise (the plain F32 softmax path, the closest to a float reference).
    /// </summary>
    public bool? FlashAttention { get; init; }

    /// <summary>Threads for decode and for batches (at least 1).</summary>
    public int Threads { get; init; } = 2;

    /// <summary>
    /// Sequences the context holds (llama.cpp's n_seq_max), each in its own part of the KV cache (kv_unified off when
    /// more than one): each gets <see cref="ContextSize"/> / Sequences positions.
    /// </summary>
    public int Sequences { get; init; } = 1;

    /// <summary>Most tokens per llama_decode call (0: the context size, capped at 512).</summary>
    public int BatchSize { get; init; }

    /// <summary>Records llama.cpp's intermediate tensors while this context evaluates (null: none, the normal case).</summary>
    public LlamaCppTensorTrace? Trace { get; init; }

    /// <summary>The flash-attention setting actually used.</summary>
    public bool EffectiveFlashAttention => FlashAttention ?? LlamaCppCacheTypes.IsQuantized(TypeV);

    /// <summary>The batch size actually used.</summary>
    public int EffectiveBatchSize => BatchSize > 0 ? BatchSize : Math.Min(ContextSize, 512);
}
