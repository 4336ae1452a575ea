using KvAdaQuant.Evaluation.Datasets;

namespace KvAdaQuant.Evaluation;

/// <summary>LAMBADA as lm-evaluation-harness's lambada_openai: accuracy when every token of " last word" is the greedy choice; perplexity = exp(-mean log-likelihood per passage).</summary>
public static class LambadaEvaluator
{
    /// <summary>Scores <paramref name="items"/>.</summary>
    public static LambadaResult Evaluate(LogLikelihoodScorer scorer, IReadOnlyList<LambadaItem> items, Action<int, int>? progress = null)
    {
        if (items.Count == 0)
        {
            throw new ArgumentException("no items to evaluate");
        }

        var sw = System.Diagnostics.Stopwatch.StartNew();
        int hits = 0;
        double ll = 0;
        for (int i = 0; i < items.Count; i++)
        {
            ContinuationScore s;
            try
            {
                s = scorer.Score(items[i].Context, items[i].Target);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"item {i + 1}: {e.Message}", e);
            }

            hits += s.IsGreedy ? 1 : 0;
            ll += s.LogLikelihood;
            progress?.Invoke(i + 1, items.Count);
        }

        return new LambadaResult((double)hits / items.Count, Math.Exp(-ll / items.Count), items.Count, sw.Elapsed.TotalSeconds);
    }
}
