using System.Diagnostics;
using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// Perplexity by llama.cpp's method: tokenize the whole text (BOS first), cut it into non-overlapping
/// chunks of <c>ctx</c> tokens, set each chunk's first token to BOS, run it from an empty cache, and score
/// the predictions of the second half of the chunk (positions ctx/2 .. ctx-2 predicting the next token).
/// </summary>
public static class PerplexityEvaluator
{
    /// <summary>Evaluates <paramref name="tokens"/> (already tokenized, BOS first) with caches from <paramref name="cacheFactory"/>.</summary>
    public static PerplexityResult Evaluate(Transformer transformer, IReadOnlyList<int> tokens, int ctx, Func<KvLayout, IKvCache> cacheFactory, int bos, Action<int, int, double>? progress = null, int maxChunks = int.MaxValue)
    {
        if (ctx < 4)
        {
            throw new ArgumentOutOfRangeException(nameof(ctx), $"--ctx must be at least 4, got {ctx}");
        }

        if (ctx > transformer.Config.ContextLength)
        {
            throw new ArgumentOutOfRangeException(nameof(ctx), $"--ctx {ctx} exceeds the model's context length {transformer.Config.ContextLength}");
        }

        int chunks = Math.Min(tokens.Count / ctx, maxChunks);
        if (chunks == 0)
        {
            throw new ArgumentException($"the text has {tokens.Count} tokens, fewer than one chunk of --ctx {ctx}");
        }

        var sw = Stopwatch.StartNew();
        int vocab = transformer.Config.VocabSize;
        const int batch = 64;
        var logits = new float[batch * vocab];
        var buf = new int[ctx];
        double nll = 0, nll2 = 0;
        int count = 0;
        int first = ctx / 2;
        using var cache = cacheFactory(transformer.CacheLayout(ctx));
        for (int c = 0; c < chunks; c++)
        {
            cache.Clear();
            for (int i = 0; i < ctx; i++)
            {
                buf[i] = tokens[(c * ctx) + i];
            }

            buf[0] = bos;
            for (int b = 0; b < ctx; b += batch)
            {
                int n = Math.Min(batch, ctx - b);
                transformer.Forward(buf.AsSpan(b, n), b, cache, logits, allLogits: true);
                for (int t = 0; t < n; t++)
                {
                    int pos = b + t;
                    if (pos < first || pos >= ctx - 1)
                    {
                        continue;
                    }

                    double tokenNll = -LogSoftmaxAt(logits.AsSpan(t * vocab, vocab), buf[pos + 1]);
                    nll += tokenNll;
                    nll2 += tokenNll * tokenNll;
                    count++;
                }
            }

            progress?.Invoke(c + 1, chunks, Math.Exp(nll / count));
        }

        double mean = nll / count, variance = (nll2 / count) - (mean * mean);
        return new PerplexityResult(Math.Exp(mean), mean, count, chunks, ctx, tokens.Count, sw.Elapsed.TotalSeconds)
        {
            PerplexityUncertainty = count > 1 ? Math.Exp(mean) * Math.Sqrt(Math.Max(variance, 0) / (count - 1)) : double.NaN,
        };
    }

    /// <summary>log softmax(logits)[index], computed in double.</summary>
    public static double LogSoftmaxAt(ReadOnlySpan<float> logits, int index) => logits[index] - DistributionMath.LogSumExp(logits);
}
