using LLama.Common;
using LLama.Native;

namespace KvAdaQuant.LlamaCpp;

/// <summary>
/// One llama.cpp sequence: a context with its own KV cache, fed tokens in order from position 0, giving the logits of
/// every position or of the last one.
/// </summary>
public sealed class LlamaCppContext : IDisposable
{
    private readonly SafeLLamaContextHandle _handle;
    private readonly LLamaBatch _batch = new();

    private LlamaCppContext(LlamaCppModel model, LlamaCppContextOptions options, SafeLLamaContextHandle handle)
    {
        Model = model;
        Options = options;
        _handle = handle;
        ContextSize = (int)handle.ContextSize;
        BatchSize = Math.Min(options.EffectiveBatchSize, (int)handle.BatchSize);
        VocabSize = model.VocabSize;
    }

    /// <summary>The weights.</summary>
    public LlamaCppModel Model { get; }

    /// <summary>The options it was built with.</summary>
    public LlamaCppContextOptions Options { get; }

    /// <summary>Token capacity llama.cpp actually allocated (it may round the request up).</summary>
    public int ContextSize { get; }

    /// <summary>Most tokens per llama_decode call.</summary>
    public int BatchSize { get; }

    /// <summary>Vocabulary size (length of one row of logits).</summary>
    public int VocabSize { get; }

    /// <summary>Positions evaluated since the last <see cref="Clear"/>.</summary>
    public int Position { get; private set; }

    /// <summary>Bytes of the K and V caches at <see cref="ContextSize"/> tokens (llama.cpp allocates them whole).</summary>
    public long KvBytes
    {
        get
        {
            long elements = (long)Model.Layers * Model.KvHeads * (Model.EmbeddingSize / Math.Max(1, Model.Heads)) * ContextSize;
            return LlamaCppCacheTypes.ByteCount(Options.TypeK, elements) + LlamaCppCacheTypes.ByteCount(Options.TypeV, elements);
        }
    }

    /// <summary>Forgets the sequence (empties the KV cache).</summary>
    public void Clear()
    {
        _handle.MemoryClear(true);
        Position = 0;
    }

    /// <summary>
    /// Appends <paramref name="tokens"/> at the current position. With <paramref name="allLogits"/>, writes the logits of
    /// every token to <paramref name="logits"/> (tokens x vocab); otherwise only those of the last token (vocab).
    /// </summary>
    public void Evaluate(ReadOnlySpan<int> tokens, Span<float> logits, bool allLogits)
    {
        if (tokens.IsEmpty)
        {
            throw new ArgumentException("no tokens to evaluate", nameof(tokens));
        }

        int need = allLogits ? tokens.Length * VocabSize : VocabSize;
        if (logits.Length < need)
        {
            throw new ArgumentException($"logits span holds {logits.Length} floats, {need} needed", nameof(logits));
        }

        if (Position + tokens.Length > ContextSize)
        {
            throw new ArgumentException($"{Position} + {tokens.Length} tokens exceed the context of {ContextSize}", nameof(tokens));
        }

        for (int start = 0; start < tokens.Length; start += BatchSize)
        {
            int n = Math.Min(BatchSize, tokens.Length - start);
            bool lastBatch = start + n == tokens.Length;
            _batch.Clear();
            for (int i = 0; i < n; i++)
            {
                int id = tokens[start + i];
                if ((uint)id >= (uint)VocabSize)
                {
                    throw new ArgumentException($"token {id} at index {start + i} is outside the vocabulary of {VocabSize}", nameof(tokens));
                }

                bool wantLogits = allLogits || (lastBatch && i == n - 1);
                _batch.Add(id, Position + i, LLamaSeqId.Zero, wantLogits);
            }

            var result = _handle.Decode(_batch);
            if (result != DecodeResult.Ok)
            {
                throw new LlamaCppException($"{Model.Path}: llama_decode failed with {result} at position {Position}");
            }

            if (allLogits)
            {
                for (int i = 0; i < n; i++)
                {
                    _handle.GetLogitsIth(i).CopyTo(logits.Slice((start + i) * VocabSize, VocabSize));
                }
            }
            else if (lastBatch)
            {
                _handle.GetLogitsIth(n - 1).CopyTo(logits[..VocabSize]);
            }

            Position += n;
        }
    }

    /// <summary>Clears the cache, evaluates <paramref name="tokens"/> from position 0 and returns all logits (tokens x vocab).</summary>
    public float[] EvaluateAll(ReadOnlySpan<int> tokens)
    {
        Clear();
        var logits = new float[tokens.Length * VocabSize];
        Evaluate(tokens, logits, allLogits: true);
        return logits;
    }

    /// <inheritdoc/>
    public void Dispose() => _handle.Dispose();

    internal static LlamaCppContext Create(LlamaCppModel model, LlamaCppContextOptions options)
    {
        if (options.ContextSize < 1)
        {
            throw new ArgumentException($"context size must be positive, got {options.ContextSize}", nameof(options));
        }

        if (options.Threads < 1)
        {
            throw new ArgumentException($"threads must be at least 1, got {options.Threads}", nameof(options));
        }

        // llama.cpp refuses a quantized V cache without flash attention and returns a null context: say why up front.
        if (LlamaCppCacheTypes.IsQuantized(options.TypeV) && !options.EffectiveFlashAttention)
        {
            throw new ArgumentException(
                $"llama.cpp needs flash attention for a quantized V cache (type_v {LlamaCppCacheTypes.Name(options.TypeV)}); " +
                "leave FlashAttention unset or set it to true", nameof(options));
        }

        if (model.Layers == 0)
        {
            throw new LlamaCppException($"{model.Path}: the file has no weights (vocabulary only); it can tokenize but not evaluate");
        }

        int headDim = model.EmbeddingSize / Math.Max(1, model.Heads);
        foreach (var (name, type) in new[] { ("type_k", options.TypeK), ("type_v", options.TypeV) })
        {
            if (LlamaCppCacheTypes.IsQuantized(type) && headDim % 32 != 0)
            {
                throw new ArgumentException(
                    $"{model.Path}: llama.cpp's {name} {LlamaCppCacheTypes.Name(type)} packs blocks of 32 values, which do not divide the head size {headDim}", nameof(options));
            }
        }

        int batch = options.EffectiveBatchSize;
        var p = new ModelParams(model.Path)
        {
            ContextSize = (uint)options.ContextSize,
            BatchSize = (uint)batch,
            UBatchSize = (uint)batch,
            SeqMax = 1,
            Threads = options.Threads,
            BatchThreads = options.Threads,
            TypeK = LlamaCppCacheTypes.ToNative(options.TypeK),
            TypeV = LlamaCppCacheTypes.ToNative(options.TypeV),
            FlashAttention = options.EffectiveFlashAttention,
        };
        LLamaContextParams native = default;
        LLama.Extensions.IContextParamsExtensions.ToLlamaContextParams(p, out native);
        native.llama_flash_attn_type = options.EffectiveFlashAttention
            ? LLamaFlashAttentionType.LLAMA_FLASH_ATTENTION_TYPE_ENABLED
            : LLamaFlashAttentionType.LLAMA_FLASH_ATTENTION_TYPE_DISABLED;
        native.no_perf = true;
        if (options.Trace is not null)
        {
            var (callback, userData) = options.Trace.Bind(LlamaCppRuntime.GgmlBaseLibrary());
            native.cb_eval = callback;
            native.cb_eval_user_data = userData;
        }

        try
        {
            var handle = SafeLLamaContextHandle.Create(model.Handle, native);
            if (handle.IsInvalid)
            {
                throw new LlamaCppException($"{model.Path}: llama.cpp returned no context for {Describe(options)}");
            }

            return new LlamaCppContext(model, options, handle);
        }
        catch (LLama.Exceptions.RuntimeError e)
        {
            throw new LlamaCppException($"{model.Path}: llama.cpp could not create a context for {Describe(options)} ({e.Message})", e);
        }
    }

    private static string Describe(LlamaCppContextOptions o) =>
        $"n_ctx {o.ContextSize}, type_k {LlamaCppCacheTypes.Name(o.TypeK)}, type_v {LlamaCppCacheTypes.Name(o.TypeV)}, flash attention {(o.EffectiveFlashAttention ? "on" : "off")}";
}
