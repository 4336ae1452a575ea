using LLama.Common;
using LLama.Native;

namespace KvAdaQuant.LlamaCpp;

/// <summary>
/// One llama.cpp sequence (or <see cref="LlamaCppContextOptions.Sequences"/> of them): a context with its own KV cache,
/// fed tokens in order from position 0, giving the logits of every position or of the last one; with several sequences,
/// <see cref="EvaluateStep"/> gives each one token in one llama_decode call.
/// </summary>
public sealed class LlamaCppContext : IDisposable
{
    private readonly SafeLLamaContextHandle _handle;
    private readonly LLamaBatch _batch = new();
    private readonly int[] _positions;

    private LlamaCppContext(LlamaCppModel model, LlamaCppContextOptions options, SafeLLamaContextHandle handle)
    {
        Model = model;
        Options = options;
        _handle = handle;
        ContextSize = (int)handle.ContextSize;
        BatchSize = Math.Min(options.EffectiveBatchSize, (int)handle.BatchSize);
        VocabSize = model.VocabSize;
        _positions = new int[options.Sequences];
        SequenceCapacity = ContextSize / options.Sequences;
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

    /// <summary>Positions evaluated since the last <see cref="Clear"/> (of sequence 0).</summary>
    public int Position => _positions[0];

    /// <summary>Positions each sequence holds: <see cref="ContextSize"/> / <see cref="LlamaCppContextOptions.Sequences"/>.</summary>
    public int SequenceCapacity { get; }

    /// <summary>Positions sequence <paramref name="sequence"/> has evaluated since the last <see cref="Clear"/>.</summary>
    public int PositionOf(int sequence) => _positions[CheckSequence(sequence)];

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
        Array.Clear(_positions);
    }

    /// <summary>
    /// Appends <paramref name="tokens"/> at the current position. With <paramref name="allLogits"/>, writes the logits of
    /// every token to <paramref name="logits"/> (tokens x vocab); otherwise only those of the last token (vocab).
    /// </summary>
    public void Evaluate(ReadOnlySpan<int> tokens, Span<float> logits, bool allLogits) => Evaluate(tokens, logits, allLogits, 0);

    /// <summary><see cref="Evaluate(ReadOnlySpan{int}, Span{float}, bool)"/> on sequence <paramref name="sequence"/>.</summary>
    public void Evaluate(ReadOnlySpan<int> tokens, Span<float> logits, bool allLogits, int sequence)
    {
        CheckSequence(sequence);
        if (tokens.IsEmpty)
        {
            throw new ArgumentException("no tokens to evaluate", nameof(tokens));
        }

        int need = allLogits ? tokens.Length * VocabSize : VocabSize;
        if (logits.Length < need)
        {
            throw new ArgumentException($"logits span holds {logits.Length} floats, {need} needed", nameof(logits));
        }

        int position = _positions[sequence];
        if (position + tokens.Length > SequenceCapacity)
        {
            throw new ArgumentException($"{position} + {tokens.Length} tokens exceed the context of {SequenceCapacity}", nameof(tokens));
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
                _batch.Add(id, position + i, (LLamaSeqId)sequence, wantLogits);
            }

            var result = _handle.Decode(_batch);
            if (result != DecodeResult.Ok)
            {
                throw new LlamaCppException($"{Model.Path}: llama_decode failed with {result} at position {position}");
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

            position += n;
            _positions[sequence] = position;
        }
    }

    /// <summary>
    /// One decode step of every sequence in one llama_decode call: sequence i takes <paramref name="tokens"/>[i] at its
    /// next position, and its logits go to <paramref name="logits"/>[i * vocab ..].
    /// </summary>
    public void EvaluateStep(ReadOnlySpan<int> tokens, Span<float> logits)
    {
        int n = _positions.Length;
        if (tokens.Length != n)
        {
            throw new ArgumentException($"{tokens.Length} tokens for {n} sequences; each takes one", nameof(tokens));
        }

        if (logits.Length < n * VocabSize)
        {
            throw new ArgumentException($"logits span holds {logits.Length} floats, {n * VocabSize} needed", nameof(logits));
        }

        _batch.Clear();
        for (int i = 0; i < n; i++)
        {
            if ((uint)tokens[i] >= (uint)VocabSize)
            {
                throw new ArgumentException($"token {tokens[i]} of sequence {i} is outside the vocabulary of {VocabSize}", nameof(tokens));
            }

            if (_positions[i] + 1 > SequenceCapacity)
            {
                throw new ArgumentException($"sequence {i}: {_positions[i]} + 1 tokens exceed the context of {SequenceCapacity}", nameof(tokens));
            }

            _batch.Add(tokens[i], _positions[i], (LLamaSeqId)i, true);
        }

        var result = _handle.Decode(_batch);
        if (result != DecodeResult.Ok)
        {
            throw new LlamaCppException($"{Model.Path}: llama_decode of a {n}-sequence step failed with {result}");
        }

        for (int i = 0; i < n; i++)
        {
            _handle.GetLogitsIth(i).CopyTo(logits.Slice(i * VocabSize, VocabSize));
            _positions[i]++;
        }
    }

    private int CheckSequence(int sequence) => (uint)sequence < (uint)_positions.Length
        ? sequence
        : throw new ArgumentOutOfRangeException(nameof(sequence), $"sequence {sequence} is outside the context's {_positions.Length}");

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

        if (options.Sequences < 1 || options.Sequences > options.ContextSize)
        {
            throw new ArgumentException($"sequences must be 1 to the context size {options.ContextSize}, got {options.Sequences}", nameof(options));
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
            SeqMax = (uint)options.Sequences,
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
        if (options.Sequences > 1)
        {
            // Each sequence in its own part of the cache, attending over its own positions only (llama.cpp's advice
            // for sequences that share no prefix).
            native.kv_unified = false;
        }

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
