using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// The reference side of a KL comparison, computed once and compared against many caches: the text cut into chunks
/// of <c>ctx</c> tokens (each starting at BOS, run from an empty cache, as llama.cpp's perplexity does), and for every
/// scored position (from <c>scoreFrom</c> to ctx-2, predicting the next token) the reference cache's log-probabilities.
/// </summary>
public sealed class KlReference
{
    private readonly List<int[]> _chunks;
    private readonly float[] _logProbs;

    private KlReference(Transformer transformer, List<int[]> chunks, int scoreFrom, float[] logProbs, int positions, double nll)
    {
        Transformer = transformer;
        _chunks = chunks;
        ScoreFrom = scoreFrom;
        _logProbs = logProbs;
        Positions = positions;
        ReferenceNll = nll;
    }

    /// <summary>The engine.</summary>
    public Transformer Transformer { get; }

    /// <summary>Chunks (BOS first).</summary>
    public IReadOnlyList<int[]> Chunks => _chunks;

    /// <summary>First scored position of each chunk.</summary>
    public int ScoreFrom { get; }

    /// <summary>Scored positions in total.</summary>
    public int Positions { get; }

    /// <summary>Mean negative log-likelihood of the reference on the scored positions.</summary>
    public double ReferenceNll { get; }

    /// <summary>Log-probabilities of scored position <paramref name="index"/> (in chunk order).</summary>
    public ReadOnlySpan<float> LogProbs(int index) => _logProbs.AsSpan(index * Transformer.Config.VocabSize, Transformer.Config.VocabSize);

    /// <summary>
    /// Cuts <paramref name="tokens"/> (BOS first) into at most <paramref name="maxChunks"/> chunks of <paramref name="ctx"/> tokens and runs the
    /// reference cache over them. <paramref name="scoreFrom"/> of -1 means ctx/2 (the second half, as llama.cpp scores).
    /// </summary>
    public static KlReference Compute(Transformer transformer, IReadOnlyList<int> tokens, int ctx, Func<KvLayout, IKvCache> referenceCache, int bos, int maxChunks = int.MaxValue, int scoreFrom = -1)
    {
        if (ctx < 4 || ctx > transformer.Config.ContextLength)
        {
            throw new ArgumentOutOfRangeException(nameof(ctx), $"--ctx must be between 4 and the model's context length {transformer.Config.ContextLength}, got {ctx}");
        }

        int n = Math.Min(tokens.Count / ctx, maxChunks);
        if (n == 0)
        {
            throw new ArgumentException($"the text has {tokens.Count} tokens, fewer than one chunk of --ctx {ctx}");
        }

        int from = scoreFrom < 0 ? ctx / 2 : Math.Clamp(scoreFrom, 0, ctx - 2);
        var chunks = new List<int[]>();
        for (int c = 0; c < n; c++)
        {
            var chunk = new int[ctx];
            for (int i = 0; i < ctx; i++)
            {
                chunk[i] = tokens[(c * ctx) + i];
            }

            chunk[0] = bos;
            chunks.Add(chunk);
        }

        int vocab = transformer.Config.VocabSize;
        int perChunk = ctx - 1 - from;
        var logProbs = new float[(long)n * perChunk * vocab];
        double nll = 0;
        int index = 0;
        using var cache = referenceCache(transformer.CacheLayout(ctx));
        foreach (var chunk in chunks)
        {
            RunScored(transformer, cache, chunk, from, (pos, logits) =>
            {
                var lp = logProbs.AsSpan(index * vocab, vocab);
                DistributionMath.LogSoftmax(logits, lp);
                nll -= lp[chunk[pos + 1]];
                index++;
            });
        }

        return new KlReference(transformer, chunks, from, logProbs, index, nll / index);
    }

    /// <summary>Compares the cache made by <paramref name="cacheFactory"/> with the reference.</summary>
    public KlResult Compare(Func<KvLayout, IKvCache> cacheFactory, Action<int, int>? progress = null)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int vocab = Transformer.Config.VocabSize;
        var lq = new float[vocab];
        var kls = new List<double>(Positions);
        double nll = 0;
        int agree = 0;
        int index = 0;
        using var cache = cacheFactory(Transformer.CacheLayout(_chunks[0].Length));
        for (int c = 0; c < _chunks.Count; c++)
        {
            var chunk = _chunks[c];
            RunScored(Transformer, cache, chunk, ScoreFrom, (pos, logits) =>
            {
                DistributionMath.LogSoftmax(logits, lq);
                var lp = LogProbs(index);
                kls.Add(DistributionMath.KlDivergence(lp, lq));
                nll -= lq[chunk[pos + 1]];
                if (System.Numerics.Tensors.TensorPrimitives.IndexOfMax(lp) == System.Numerics.Tensors.TensorPrimitives.IndexOfMax(lq))
                {
                    agree++;
                }

                index++;
            });
            progress?.Invoke(c + 1, _chunks.Count);
        }

        return new KlResult(kls.Average(), DistributionMath.Percentile(kls, 99), kls.Max(), (double)agree / index, Math.Exp(nll / index), Math.Exp(ReferenceNll), index, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Runs one chunk from an empty cache and hands the logits of every scored position to <paramref name="onPosition"/>.</summary>
    private static void RunScored(Transformer transformer, IKvCache cache, int[] chunk, int from, Action<int, float[]> onPosition)
    {
        const int batch = 64;
        int vocab = transformer.Config.VocabSize;
        var logits = new float[batch * vocab];
        var one = new float[vocab];
        cache.Clear();
        for (int b = 0; b < chunk.Length; b += batch)
        {
            int n = Math.Min(batch, chunk.Length - b);
            transformer.Forward(chunk.AsSpan(b, n), b, cache, logits, allLogits: true);
            for (int t = 0; t < n; t++)
            {
                int pos = b + t;
                if (pos < from || pos >= chunk.Length - 1)
                {
                    continue;
                }

                Array.Copy(logits, t * vocab, one, 0, vocab);
                onPosition(pos, one);
            }
        }
    }
}
