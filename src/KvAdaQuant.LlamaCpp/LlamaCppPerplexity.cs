namespace KvAdaQuant.LlamaCpp;

/// <summary>
/// llama.cpp's perplexity method (its <c>llama-perplexity</c> tool) through the low-level API: non-overlapping chunks of
/// the context size, the first token of each chunk replaced by BOS, the cache cleared per chunk, and the predictions of
/// the second half of each chunk scored (positions n/2 .. n-2 predicting the next token).
/// </summary>
public static class LlamaCppPerplexity
{
    /// <summary>Evaluates <paramref name="tokens"/> (BOS first) in chunks of <paramref name="ctx"/> tokens on <paramref name="context"/>.</summary>
    public static LlamaCppPerplexityResult Evaluate(LlamaCppContext context, IReadOnlyList<int> tokens, int ctx, int maxChunks = int.MaxValue)
    {
        if (ctx < 4 || ctx > context.ContextSize)
        {
            throw new ArgumentOutOfRangeException(nameof(ctx), $"chunk size {ctx} must be between 4 and the context size {context.ContextSize}");
        }

        int chunks = Math.Min(tokens.Count / ctx, maxChunks);
        if (chunks == 0)
        {
            throw new ArgumentException($"the text has {tokens.Count} tokens, fewer than one chunk of {ctx}", nameof(tokens));
        }

        int bos = context.Model.BosToken;
        int vocab = context.VocabSize;
        var chunk = new int[ctx];
        var logits = new float[ctx * vocab];
        double nll = 0, nll2 = 0;
        int scored = 0;
        int first = ctx / 2;
        for (int c = 0; c < chunks; c++)
        {
            for (int i = 0; i < ctx; i++)
            {
                chunk[i] = tokens[(c * ctx) + i];
            }

            if (bos >= 0)
            {
                chunk[0] = bos;
            }

            context.Clear();
            context.Evaluate(chunk, logits, allLogits: true);
            for (int j = first; j < ctx - 1; j++)
            {
                double tokenNll = -LogProbability(logits.AsSpan(j * vocab, vocab), chunk[j + 1]);
                nll += tokenNll;
                nll2 += tokenNll * tokenNll;
                scored++;
            }
        }

        double mean = nll / scored, variance = (nll2 / scored) - (mean * mean);
        return new LlamaCppPerplexityResult(Math.Exp(mean), mean, scored, chunks)
        {
            PerplexityUncertainty = scored > 1 ? Math.Exp(mean) * Math.Sqrt(Math.Max(variance, 0) / (scored - 1)) : double.NaN,
        };
    }

    // log softmax at one index, accumulated in double as llama-perplexity's log_softmax does.
    private static double LogProbability(ReadOnlySpan<float> logits, int index)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits)
        {
            max = Math.Max(max, v);
        }

        double sum = 0;
        foreach (float v in logits)
        {
            sum += Math.Exp(v - max);
        }

        return logits[index] - max - Math.Log(sum);
    }
}
