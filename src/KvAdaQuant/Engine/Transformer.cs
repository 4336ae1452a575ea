using System.Numerics.Tensors;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Engine;

/// <summary>
/// The Llama-family forward pass. One call processes a batch of consecutive positions (prefill) or a
/// single one (decode): embed, then per layer RMSNorm, Q/K/V projections (+bias), RoPE, append K/V to
/// the layer's cache, attention through the cache, output projection, RMSNorm, SwiGLU MLP; final norm
/// and classifier. Not thread-safe: one instance serves one sequence at a time.
/// </summary>
public sealed class Transformer : IDisposable
{
    private readonly LlamaModel _model;
    private readonly WorkerPool _pool;
    private readonly MatMulKernel _matmul;
    private readonly AttentionWork _attention;
    private readonly RopeTable _rope;
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
        var c = Config;
        var w = _model.Weights;
        int n = tokens.Length;
        if (n == 0)
        {
            throw new ArgumentException("no tokens to process", nameof(tokens));
        }

        if (cache.Length != pos0)
        {
            throw new InvalidOperationException($"cache holds {cache.Length} positions but the batch starts at {pos0}");
        }

        if (pos0 + n > cache.Layout.Capacity)
        {
            throw new KvCacheException($"context full: {pos0} + {n} tokens exceed the context of {cache.Layout.Capacity}");
        }

        int outRows = allLogits ? n : 1;
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

        for (int t = 0; t < n; t++)
        {
            _rope.Angles(pos0 + t, ws.Cos.AsSpan(t * _rope.Half, _rope.Half), ws.Sin.AsSpan(t * _rope.Half, _rope.Half));
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

            observer?.OnKeyValues(l, pos0, n, ws.KPre.AsSpan(0, n * kvd), k, v);
            var layerCache = cache.Layers[l];
            layerCache.Append(k, v, n);
            Attention(layerCache, n, pos0);
            var att = ws.Att.AsSpan(0, n * qd);
            observer?.OnAttentionOutput(l, pos0, n, att);
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
            observer?.OnResidual(l, pos0, n, x);
        }

        int first = allLogits ? 0 : n - 1;
        var xf = ws.Xb.AsSpan(0, outRows * dim);
        for (int t = first; t < n; t++)
        {
            Kernels.RmsNorm(x.Slice(t * dim, dim), w.FinalNorm, c.NormEps, xf.Slice((t - first) * dim, dim));
        }

        _matmul.MatMul(w.Output, xf, logits, outRows);
    }

    /// <inheritdoc/>
    public void Dispose() => _pool.Dispose();

    private void Attention(IKvLayerCache cache, int n, int pos0)
    {
        _attention.Cache = cache;
        _attention.Tokens = n;
        _attention.Pos0 = pos0;
        _attention.Block = CausalBlock(n, Config.KvHeads, _pool.Threads);
        _pool.Run(_attention, (n + _attention.Block - 1) / _attention.Block * Config.KvHeads);
        _attention.Cache = null;
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

        public IKvLayerCache? Cache { get; set; }

        public int Tokens { get; set; }

        public int Pos0 { get; set; }

        public int Block { get; set; } = 1;

        public void Execute(int index, int worker)
        {
            var c = owner.Config;
            int groups = c.KvHeads, rep = c.GroupSize, hd = c.HeadDim, qd = c.QDim;
            int blocks = (Tokens + Block - 1) / Block;
            int t0 = (blocks - 1 - (index / groups)) * Block;
            int g = index % groups;
            int count = Math.Min(Block, Tokens - t0);
            int first = Pos0 + t0 + 1;
            var ws = owner._ws;
            int span = ((count - 1) * qd) + (rep * hd);
            var scratch = Scratch(worker, Cache!.CausalScratchFloats(rep, first, count));
            Cache.AttendCausal(
                g,
                new ReadOnlySpan<float>(ws.Q, (t0 * qd) + (g * rep * hd), span),
                qd,
                rep,
                first,
                count,
                new Span<float>(ws.Att, (t0 * qd) + (g * rep * hd), span),
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
