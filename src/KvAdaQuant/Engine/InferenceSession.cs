using KvAdaQuant.KvCache;

namespace KvAdaQuant.Engine;

/// <summary>One sequence's state: the engine, its KV cache and the position reached.</summary>
public sealed class InferenceSession : IDecodeSession, IDisposable
{
    private readonly float[] _logits;
    private readonly int? _batchSize;
    private ModelFingerprint? _fingerprint;

    /// <summary>Creates a session over <paramref name="transformer"/> with <paramref name="cache"/>.</summary>
    public InferenceSession(Transformer transformer, IKvCache cache)
    {
        Transformer = transformer;
        Cache = cache;
        _logits = new float[transformer.Config.VocabSize];
    }

    /// <summary>The engine.</summary>
    public Transformer Transformer { get; }

    /// <summary>The cache.</summary>
    public IKvCache Cache { get; }

    /// <summary>Positions processed.</summary>
    public int Position => Cache.Length;

    /// <inheritdoc/>
    int IDecodeSession.Capacity => Cache.Layout.Capacity;

    /// <inheritdoc/>
    long IDecodeSession.ByteCount => Cache.ByteCount;

    /// <inheritdoc/>
    string IDecodeSession.Device => "the CPU";

    /// <summary>
    /// Largest batch a single prefill call processes at once (llama.cpp's n_ubatch). By default
    /// <see cref="FullPrecisionBatchSize"/> where the cache's results do not depend on the batching
    /// (<see cref="IsBatchInvariant"/>: each position's products and attention have the same bits in any batch), and
    /// <see cref="QuantizedBatchSize"/> on other caches, where a batch's early positions attend to rows that later positions
    /// of the same batch already pushed out of the full-precision window, so the batch size is part of the result.
    /// </summary>
    public int BatchSize
    {
        get => _batchSize ?? (IsBatchInvariant(Cache) ? InvariantBatchSize(Transformer.Config) : QuantizedBatchSize);
        init => _batchSize = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(BatchSize), $"batch size must be at least 1, got {value}");
    }

    /// <summary>
    /// Whether prefill results on <paramref name="cache"/> are the same whatever the batch size: an FP16 / FP32 cache, or a
    /// plan whose every quantized K and V spec quantizes each token as it arrives (per-token groups, no residual window;
    /// sinks are fixed positions). Per-channel groups and residual windows quantize in chunks as the cache fills, so an
    /// early position of a batch can see a later one's rows already quantized.
    /// </summary>
    public static bool IsBatchInvariant(IKvCache cache) => cache switch
    {
        FullPrecisionKvCache => true,
        QuantizedKvCache q => q.Plan.Layers.All(l => QuantizesOnArrival(l.K) && QuantizesOnArrival(l.V)),
        _ => false,
    };

    private static bool QuantizesOnArrival(Quantization.KvSpec spec) =>
        !spec.IsQuantized || (spec.Axis == Quantization.QuantAxis.PerToken && spec.Residual == 0);

    /// <summary>Largest default <see cref="BatchSize"/> on a batch-invariant cache: 512, llama.cpp's default n_ubatch.</summary>
    public const int FullPrecisionBatchSize = 512;

    /// <summary>Activation bytes a default batch may take (<see cref="InvariantBatchSize"/>).</summary>
    public const long BatchWorkspaceBytes = 8L << 20;

    /// <summary>
    /// Default <see cref="BatchSize"/> on a batch-invariant cache: <see cref="FullPrecisionBatchSize"/> where the batch's
    /// activations (<see cref="Engine.Transformer.WorkspaceBytesPerToken"/>) fit in <see cref="BatchWorkspaceBytes"/>, else
    /// the most that fit, at least <see cref="QuantizedBatchSize"/>: stories3M-q80 (8 KB a token) gets 512, a
    /// Llama-3.2-1B shape (105 KB a token) 80, where batches of 512 had added 51 MB of resident memory for a prefill
    /// within noise of the batches of 64.
    /// </summary>
    public static int InvariantBatchSize(Model.ModelConfig config) =>
        (int)Math.Clamp(BatchWorkspaceBytes / Engine.Transformer.WorkspaceBytesPerToken(config), QuantizedBatchSize, FullPrecisionBatchSize);

    /// <summary>Default <see cref="BatchSize"/> on other caches.</summary>
    public const int QuantizedBatchSize = 64;

    /// <summary>
    /// Largest batch of the all-logits <see cref="Prefill(ReadOnlySpan{int}, PositionLogitsHandler)"/>: at most
    /// <see cref="BatchSize"/> and at most 64, so that its logits ([batch, vocab]) stay at 33 MB for a 128k vocabulary.
    /// </summary>
    public int LogitsBatchSize => Math.Min(BatchSize, QuantizedBatchSize);

    /// <summary>Logits after the last call (valid until the next).</summary>
    public ReadOnlySpan<float> Logits => _logits;

    /// <summary>Processes <paramref name="tokens"/> in batches and returns the logits of the last one.</summary>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, IForwardObserver? observer = null)
    {
        for (int i = 0; i < tokens.Length; i += BatchSize)
        {
            var chunk = tokens.Slice(i, Math.Min(BatchSize, tokens.Length - i));
            Transformer.Forward(chunk, Position, Cache, _logits, allLogits: false, observer);
        }

        return _logits;
    }

    /// <summary>
    /// Processes <paramref name="tokens"/> in batches, handing <paramref name="onLogits"/> the logits after each (the batch's
    /// logits of every position, one output product per batch), and returns the logits of the last one.
    /// </summary>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, PositionLogitsHandler onLogits)
    {
        ArgumentNullException.ThrowIfNull(onLogits);
        int vocab = _logits.Length;
        int batch = LogitsBatchSize;
        var all = new float[Math.Min(batch, Math.Max(tokens.Length, 1)) * vocab];
        for (int i = 0; i < tokens.Length; i += batch)
        {
            int n = Math.Min(batch, tokens.Length - i);
            var rows = all.AsSpan(0, n * vocab);
            Transformer.Forward(tokens.Slice(i, n), Position, Cache, rows, allLogits: true);
            for (int j = 0; j < n; j++)
            {
                onLogits(i + j, rows.Slice(j * vocab, vocab));
            }

            rows.Slice((n - 1) * vocab, vocab).CopyTo(_logits);
        }

        return _logits;
    }

    /// <summary>Processes one token and returns its logits.</summary>
    public ReadOnlySpan<float> Decode(int token, IForwardObserver? observer = null)
    {
        Transformer.Forward([token], Position, Cache, _logits, allLogits: false, observer);
        return _logits;
    }

    /// <summary>Runs <paramref name="tokens"/> as one batch, whatever <see cref="BatchSize"/> (a step of <see cref="BatchDecoder"/>).</summary>
    internal void Forward(ReadOnlySpan<int> tokens) => Transformer.Forward(tokens, Position, Cache, _logits, allLogits: false);

    /// <summary>Sets the logits of the last position (a batch step's, <see cref="BatchDecoder"/>).</summary>
    internal void SetLogits(ReadOnlySpan<float> logits) => logits.CopyTo(_logits);

    /// <inheritdoc/>
    ReadOnlySpan<float> IDecodeSession.Prefill(ReadOnlySpan<int> tokens) => Prefill(tokens);

    /// <inheritdoc/>
    ReadOnlySpan<float> IDecodeSession.Decode(int token) => Decode(token);

    /// <inheritdoc/>
    ReadOnlySpan<float> IDecodeSession.Prefill(ReadOnlySpan<int> tokens, PositionLogitsHandler onLogits) => Prefill(tokens, onLogits);

    /// <inheritdoc/>
    /// <remarks>The cache must be one <see cref="KvCacheFactory"/> builds (<see cref="KvCacheState.CanSave"/>); any other is never cut back.</remarks>
    public bool CanTruncate(int length) => KvCacheState.CanSave(Cache) && KvCacheState.CanTruncate(Cache, length);

    /// <inheritdoc/>
    public void Truncate(int length) => KvCacheState.Truncate(Cache, length);

    /// <summary>The model's identity in a saved state (<see cref="SessionStateFile"/>), computed on first use.</summary>
    internal ModelFingerprint Fingerprint => _fingerprint ??= ModelFingerprint.Of(Transformer.Model, Transformer.Model.Tokenizer);

    /// <summary>Sets the logits of the last position (a restored state's).</summary>
    internal void RestoreLogits(ReadOnlySpan<float> logits)
    {
        if (logits.Length == _logits.Length)
        {
            logits.CopyTo(_logits);
        }
        else if (logits.Length == 0)
        {
            Array.Clear(_logits);
        }
        else
        {
            throw new ArgumentException($"{logits.Length} logits for a vocabulary of {_logits.Length}");
        }
    }

    /// <summary>Forgets the sequence.</summary>
    public void Reset() => Cache.Clear();

    /// <inheritdoc/>
    InferenceSession IDecodeSession.StateSession => this;

    /// <inheritdoc/>
    ReadOnlySpan<float> IDecodeSession.Prefill(ReadOnlySpan<int> tokens, IForwardObserver observer) => Prefill(tokens, observer);

    /// <inheritdoc/>
    public void Dispose() => Cache.Dispose();
}
