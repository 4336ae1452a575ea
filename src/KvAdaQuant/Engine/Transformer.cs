using System.Numerics.Tensors;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Engine;

/// <summary>
/// The Llama-family forward pass. One call processes a batch of consecutive positions (prefill) or a
/// single one (decode): embed, then per layer RMSNorm, Q/K/V projections (+bias), RoPE, append K/V to
/// the layer's cache, attention through the cache, output projection, RMSNorm, SwiGLU MLP; final norm
/// and classifier. A call may also run several sequences, each with its own cache, in one batch. Not thread-safe: one
/// call at a time.
/// </summary>
public sealed class Transformer : IDisposable
{
    private readonly LlamaModel _model;
    private readonly WorkerPool _pool;
    private readonly MatMulKernel _matmul;
    private readonly AttentionWork _attention;
    private readonly RopeTable _rope;
    private readonly Segments _segments = new();
    private long _forwardPasses;
    private long _sequencesRun;
    private Workspace _ws = new(0, null!);

    /// <summary>Creates the engine over <paramref name="model"/> using <paramref name="threads"/> threads (0 = all cores).</summary>
    public Transformer(LlamaModel model, int threads = 0)
    {
        _model = model;
        _pool = new WorkerPool(threads);
        _matmul = new MatMulKernel(_pool);
        _attention = new AttentionWork(this);
        _rope = new RopeTable(model.Config, model.Weights.RopeFrequencyFactors);
    }

    /// <summary>Model shape.</summary>
    public ModelConfig Config => _model.Config;

    /// <summary>The model.</summary>
    public LlamaModel Model => _model;

    /// <summary>Forward passes run so far (each a batch of one or several sequences' tokens; llama.cpp's llama_decode calls).</summary>
    public long ForwardPasses => Interlocked.Read(ref _forwardPasses);

    /// <summary>Sequences those forward passes ran, summed over the passes (one per pass unless several sequences ran together).</summary>
    public long SequencesRun => Interlocked.Read(ref _sequencesRun);

    /// <summary>Worker threads.</summary>
    public int Threads => _pool.Threads;

    /// <summary>The matrix product kernel (and its worker pool), for callers that run their own products.</summary>
    public MatMulKernel MatMul => _matmul;

    /// <summary>Bytes of activations the forward pass keeps per token of a batch of a model of shape <paramref name="config"/> (its workspace: residual, norms, Q/K/V, attention output, MLP, RoPE angles).</summary>
    public static long WorkspaceBytesPerToken(ModelConfig config) => Workspace.FloatsPerToken(config) * sizeof(float);

    /// <summary>Creates a cache layout for this model with room for <paramref name="capacity"/> positions.</summary>
    public KvLayout CacheLayout(int capacity) => new(Config.Layers, Config.KvHeads, Config.HeadDim, capacity);

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions pos0.. (the cache must hold exactly pos0 positions).
    /// Writes logits of every position ([tokens, vocab]) when <paramref name="allLogits"/>, else of the last one.
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, int pos0, IKvCache cache, Span<float> logits, bool allLogits, IForwardObserver? observer = null)
    {
        if (tokens.Length == 0)
        {
            throw new ArgumentException("no tokens to process", nameof(tokens));
        }

        ArgumentNullException.ThrowIfNull(cache);
        if (cache.Length != pos0)
        {
            throw new InvalidOperationException($"cache holds {cache.Length} positions but the batch starts at {pos0}");
        }

        _segments.Set(0, cache, 0, tokens.Length);
        _segments.Count = 1;
        ForwardSegments(tokens, logits, allLogits, observer);
    }

    /// <summary>
    /// Runs several sequences in one batch (llama.cpp's multi-sequence <c>llama_decode</c>): sequence i's
    /// <paramref name="counts"/>[i] tokens follow each other in <paramref name="tokens"/> and continue
    /// <paramref name="caches"/>[i] from its current length. The weight products run once over all the tokens; each
    /// sequence appends to and attends over its own cache. Writes one row of logits per sequence ([sequences, vocab]),
    /// those of its last token. Each sequence gets the result it would get alone in a batch of its own tokens wherever
    /// the weights' products give every token the same bits in any batch (Q8_0, Q4_0 and the other block types whose
    /// batch tiles keep the one-token arithmetic; <c>BatchSizeDeterminismTests</c>, <c>MultiSequenceDecodeTests</c>).
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, ReadOnlySpan<int> counts, IReadOnlyList<IKvCache> caches, Span<float> logits)
    {
        ArgumentNullException.ThrowIfNull(caches);
        if (counts.Length == 0)
        {
            throw new ArgumentException("no sequences to process", nameof(counts));
        }

        if (caches.Count != counts.Length)
        {
            throw new ArgumentException($"{caches.Count} caches for {counts.Length} sequences", nameof(caches));
        }

        _segments.Reserve(counts.Length);
        int start = 0;
        for (int i = 0; i < counts.Length; i++)
        {
            var cache = caches[i] ?? throw new ArgumentNullException(nameof(caches), $"cache of sequence {i} is null");
            if (counts[i] < 1)
            {
                throw new ArgumentException($"sequence {i} has {counts[i]} tokens; each needs at least one", nameof(counts));
            }

            for (int j = 0; j < i; j++)
            {
                if (ReferenceEquals(caches[j], cache))
                {
                    throw new ArgumentException($"sequences {j} and {i} share one cache; each needs its own", nameof(caches));
                }
            }

            _segments.Set(i, cache, start, counts[i]);
            start += counts[i];
        }

        if (start != tokens.Length)
        {
            throw new ArgumentException($"the sequences' counts add up to {start} tokens but {tokens.Length} were given", nameof(tokens));
        }

        _segments.Count = counts.Length;
        ForwardSegments(tokens, logits, allLogits: false, observer: null);
    }

    private void ForwardSegments(ReadOnlySpan<int> tokens, Span<float> logits, bool allLogits, IForwardObserver? observer)
    {
        var c = Config;
        var w = _model.Weights;
        int n = tokens.Length;
        var seg = _segments;
        for (int s = 0; s < seg.Count; s++)
        {
            var cache = seg.Caches[s]!;
            int pos0 = cache.Length;
            if (pos0 + seg.Counts[s] > cache.Layout.Capacity)
            {
                throw new KvCacheException(seg.Count == 1
                    ? $"context full: {pos0} + {seg.Counts[s]} tokens exceed the context of {cache.Layout.Capacity}"
                    : $"context full in sequence {s}: {pos0} + {seg.Counts[s]} tokens exceed the context of {cache.Layout.Capacity}");
            }

            seg.Pos0[s] = pos0;
        }

        Interlocked.Increment(ref _forwardPasses);
        Interlocked.Add(ref _sequencesRun, seg.Count);

        int outRows = allLogits ? n : seg.Count;
        if (logits.Length < outRows * c.VocabSize)
        {
            throw new ArgumentException($"logits buffer holds {logits.Length} floats, need {outRows * c.VocabSize}");
        }

        if (_ws.Tokens < n)
        {
            _ws = new Workspace(Math.Max(n, 1), c);
        }

        var ws = _ws;
        int dim = c.Dim, qd = c.QDim, kvd = c.KvDim, hd = c.HeadDim, hid = c.HiddenDim;
        var x = ws.X.AsSpan(0, n * dim);
        for (int t = 0; t < n; t++)
        {
            int tok = tokens[t];
            if ((uint)tok >= (uint)c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token {tok} at batch index {t} is outside the vocabulary of {c.VocabSize}");
            }

            w.TokenEmbedding.DequantizeRow(tok, x.Slice(t * dim, dim));
        }

        for (int s = 0; s < seg.Count; s++)
        {
            for (int i = 0; i < seg.Counts[s]; i++)
            {
                int t = seg.Starts[s] + i;
                _rope.Angles(seg.Pos0[s] + i, ws.Cos.AsSpan(t * _rope.Half, _rope.Half), ws.Sin.AsSpan(t * _rope.Half, _rope.Half));
            }
        }

        bool interleaved = c.RopeLayout == RopeLayout.Interleaved;
        for (int l = 0; l < c.Layers; l++)
        {
            var lw = w.Layers[l];
            var xb = ws.Xb.AsSpan(0, n * dim);
            for (int t = 0; t < n; t++)
            {
                Kernels.RmsNorm(x.Slice(t * dim, dim), lw.AttentionNorm, c.NormEps, xb.Slice(t * dim, dim));
            }

            var q = ws.Q.AsSpan(0, n * qd);
            var k = ws.K.AsSpan(0, n * kvd);
            var v = ws.V.AsSpan(0, n * kvd);
            _matmul.MatMul(lw.Wq, q, lw.Wk, k, lw.Wv, v, xb, n);
            for (int t = 0; t < n; t++)
            {
                if (lw.Bq is not null)
                {
                    TensorPrimitives.Add(q.Slice(t * qd, qd), lw.Bq, q.Slice(t * qd, qd));
                }

                if (lw.Bk is not null)
                {
                    TensorPrimitives.Add(k.Slice(t * kvd, kvd), lw.Bk, k.Slice(t * kvd, kvd));
                }

                if (lw.Bv is not null)
                {
                    TensorPrimitives.Add(v.Slice(t * kvd, kvd), lw.Bv, v.Slice(t * kvd, kvd));
                }
            }

            if (observer is not null)
            {
                k.CopyTo(ws.KPre.AsSpan(0, n * kvd));
            }

            for (int t = 0; t < n; t++)
            {
                var cos = ws.Cos.AsSpan(t * _rope.Half, _rope.Half);
                var sin = ws.Sin.AsSpan(t * _rope.Half, _rope.Half);
                Kernels.Rope(q.Slice(t * qd, qd), hd, cos, sin, interleaved);
                Kernels.Rope(k.Slice(t * kvd, kvd), hd, cos, sin, interleaved);
            }

            observer?.OnKeyValues(l, seg.Pos0[0], n, ws.KPre.AsSpan(0, n * kvd), k, v);
            for (int s = 0; s < seg.Count; s++)
            {
                int start = seg.Starts[s], count = seg.Counts[s];
                try
                {
                    seg.Caches[s]!.Layers[l].Append(k.Slice(start * kvd, count * kvd), v.Slice(start * kvd, count * kvd), count);
                }
                catch (KvValueException e)
                {
                    // A NaN or an infinity here comes from the weights (a damaged file) or the layers before this one.
                    throw new KvValueException($"{_model.Path}: layer {l}: {e.Message} (NaN, infinity or an overflow in this model's weights or activations)", e);
                }
            }

            Attention(l, n);
            var att = ws.Att.AsSpan(0, n * qd);
            observer?.OnAttentionOutput(l, seg.Pos0[0], n, att);
            _matmul.MatMul(lw.Wo, att, xb, n);
            TensorPrimitives.Add(x, xb, x);

            for (int t = 0; t < n; t++)
            {
                Kernels.RmsNorm(x.Slice(t * dim, dim), lw.FfnNorm, c.NormEps, xb.Slice(t * dim, dim));
            }

            var h1 = ws.H1.AsSpan(0, n * hid);
            var h3 = ws.H3.AsSpan(0, n * hid);
            _matmul.MatMul(lw.W1, h1, lw.W3, h3, null, default, xb, n);
            Kernels.SwiGlu(h1, h3, hid);
            _matmul.MatMul(lw.W2, h1, xb, n);
            TensorPrimitives.Add(x, xb, x);
            observer?.OnResidual(l, seg.Pos0[0], n, x);
        }

        var xf = ws.Xb.AsSpan(0, outRows * dim);
        for (int r = 0; r < outRows; r++)
        {
            // Every position, or the last of each sequence.
            int t = allLogits ? r : seg.Starts[r] + seg.Counts[r] - 1;
            Kernels.RmsNorm(x.Slice(t * dim, dim), w.FinalNorm, c.NormEps, xf.Slice(r * dim, dim));
        }

        _matmul.MatMul(w.Output, xf, logits, outRows);
        Array.Clear(seg.Caches, 0, seg.Count);
    }

    /// <inheritdoc/>
    public void Dispose() => _pool.Dispose();

    private void Attention(int layer, int n)
    {
        var seg = _segments;
        int block = CausalBlock(n, Config.KvHeads, _pool.Threads);
        int items = 0;
        for (int s = 0; s < seg.Count; s++)
        {
            seg.Layers[s] = seg.Caches[s]!.Layers[layer];
            seg.FirstItem[s] = items;
            items += (seg.Counts[s] + block - 1) / block * Config.KvHeads;
        }

        seg.FirstItem[seg.Count] = items;
        _attention.Block = block;
        _pool.Run(_attention, items);
        Array.Clear(seg.Layers, 0, seg.Count);
    }

    /// <summary>
    /// Tokens per attention item of a batch of <paramref name="tokens"/>: up to <see cref="MaxCausalBlock"/>, so that the
    /// cache can share work between them (<see cref="IKvLayerCache.AttendCausal"/>), and few enough that every thread
    /// gets at least four items.
    /// </summary>
    internal static int CausalBlock(int tokens, int kvHeads, int threads) =>
        Math.Clamp((int)((long)tokens * kvHeads / (4L * threads)), 1, MaxCausalBlock);

    /// <summary>The most tokens of a batch one attention item serves.</summary>
    internal const int MaxCausalBlock = 16;

    /// <summary>
    /// Attention for one (block of tokens, KV head) item: all query heads of the group against the cache, each token
    /// over its causal prefix. Items go last block first, the longest prefixes first.
    /// </summary>
    private sealed class AttentionWork(Transformer owner) : IParallelWork
    {
        private readonly float[][] _scores = Enumerable.Range(0, owner.Threads).Select(_ => Array.Empty<float>()).ToArray();

        public int Block { get; set; } = 1;

        public void Execute(int index, int worker)
        {
            var c = owner.Config;
            var seg = owner._segments;
            int s = 0;
            while (index >= seg.FirstItem[s + 1])
            {
                s++;
            }

            index -= seg.FirstItem[s];
            int groups = c.KvHeads, rep = c.GroupSize, hd = c.HeadDim, qd = c.QDim;
            int tokens = seg.Counts[s];
            int blocks = (tokens + Block - 1) / Block;
            int t0 = (blocks - 1 - (index / groups)) * Block;
            int g = index % groups;
            int count = Math.Min(Block, tokens - t0);
            int first = seg.Pos0[s] + t0 + 1;
            int row = seg.Starts[s] + t0;
            var ws = owner._ws;
            var cache = seg.Layers[s]!;
            int span = ((count - 1) * qd) + (rep * hd);
            var scratch = Scratch(worker, cache.CausalScratchFloats(rep, first, count));
            cache.AttendCausal(
                g,
                new ReadOnlySpan<float>(ws.Q, (row * qd) + (g * rep * hd), span),
                qd,
                rep,
                first,
                count,
                new Span<float>(ws.Att, (row * qd) + (g * rep * hd), span),
                qd,
                scratch);
        }

        private Span<float> Scratch(int worker, int size)
        {
            if (_scores[worker].Length < size)
            {
                // Grow geometrically: the attended length grows by one per position, and a new array per position
                // left prefill and decode allocating (and the large-object heap holding) gigabytes at 32k context.
                _scores[worker] = new float[Math.Max(size, Math.Max(1024, 2 * _scores[worker].Length))];
            }

            return _scores[worker].AsSpan(0, size);
        }
    }

    /// <summary>The sequences of the batch being run: cache, first token in the batch, tokens, starting position.</summary>
    private sealed class Segments
    {
        public int Count { get; set; }

        public IKvCache?[] Caches { get; private set; } = new IKvCache?[1];

        public IKvLayerCache?[] Layers { get; private set; } = new IKvLayerCache?[1];

        public int[] Starts { get; private set; } = new int[1];

        public int[] Counts { get; private set; } = new int[1];

        public int[] Pos0 { get; private set; } = new int[1];

        // Attention items before each sequence's (and the total after the last).
        public int[] FirstItem { get; private set; } = new int[2];

        public void Reserve(int sequences)
        {
            if (Caches.Length < sequences)
            {
                Caches = new IKvCache?[sequences];
                Layers = new IKvLayerCache?[sequences];
                Starts = new int[sequences];
                Counts = new int[sequences];
                Pos0 = new int[sequences];
                FirstItem = new int[sequences + 1];
            }
        }

        public void Set(int i, IKvCache cache, int start, int count)
        {
            Caches[i] = cache;
            Starts[i] = start;
            Counts[i] = count;
        }
    }

    private sealed class Workspace
    {
        public Workspace(int tokens, ModelConfig c)
        {
            Tokens = tokens;
            if (tokens == 0)
            {
                X = Xb = Q = K = KPre = V = Att = H1 = H3 = Cos = Sin = [];
                return;
            }

            X = new float[tokens * c.Dim];
            Xb = new float[tokens * Math.Max(c.Dim, c.QDim)];
            Q = new float[tokens * c.QDim];
            K = new float[tokens * c.KvDim];
            KPre = new float[tokens * c.KvDim];
            V = new float[tokens * c.KvDim];
            Att = new float[tokens * c.QDim];
            H1 = new float[tokens * c.HiddenDim];
            H3 = new float[tokens * c.HiddenDim];
            Cos = new float[tokens * c.HeadDim / 2];
            Sin = new float[tokens * c.HeadDim / 2];
        }

        public int Tokens { get; }

        // The floats the constructor allocates per token (X, Xb, Q, K, KPre, V, Att, H1, H3, Cos, Sin).
        public static long FloatsPerToken(ModelConfig c) =>
            c.Dim + Math.Max(c.Dim, c.QDim) + c.QDim + (3L * c.KvDim) + c.QDim + (2L * c.HiddenDim) + c.HeadDim;

        public float[] X { get; }

        public float[] Xb { get; }

        public float[] Q { get; }

        public float[] K { get; }

        public float[] KPre { get; }

        public float[] V { get; }

        public float[] Att { get; }

        public float[] H1 { get; }

        public float[] H3 { get; }

        public float[] Cos { get; }

        public float[] Sin { get; }
    }
}
