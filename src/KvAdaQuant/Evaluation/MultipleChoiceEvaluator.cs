using KvAdaQuant.Evaluation.Datasets;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// Multiple choice by log-likelihood, lm-evaluation-harness's way: <c>acc</c> picks the choice whose continuation has the
/// highest summed log-likelihood, <c>acc_norm</c> the highest log-likelihood divided by the choice's length in characters;
/// ties go to the first choice (numpy argmax).
/// </summary>
public static class MultipleChoiceEvaluator
{
    /// <summary>Picks (acc choice, acc_norm choice) from the choices' log-likelihoods.</summary>
    public static (int Acc, int AccNorm) Choose(IReadOnlyList<double> logLikelihoods, IReadOnlyList<string> choices)
    {
        int acc = 0;
        int norm = 0;
        for (int i = 1; i < logLikelihoods.Count; i++)
        {
            if (logLikelihoods[i] > logLikelihoods[acc])
            {
                acc = i;
            }

            if (logLikelihoods[i] / choices[i].Length > logLikelihoods[norm] / choices[norm].Length)
            {
                norm = i;
            }
        }

        return (acc, norm);
    }

    /// <summary>Scores <paramref name="items"/>.</summary>
    public static MultipleChoiceResult Evaluate(LogLikelihoodScorer scorer, IReadOnlyList<MultipleChoiceItem> items, Action<int, int>? progress = null)
    {
        if (items.Count == 0)
        {
            throw new ArgumentException("no items to evaluate");
        }

        var sw = System.Diagnostics.Stopwatch.StartNew();
        int acc = 0;
        int norm = 0;
        for (int q = 0; q < items.Count; q++)
        {
            var item = items[q];
            var lls = new double[item.Continuations.Count];
            for (int i = 0; i < lls.Length; i++)
            {
                try
                {
                    lls[i] = scorer.Score(item.Contexts[i], item.Continuations[i]).LogLikelihood;
                }
                catch (ArgumentException e)
                {
                    throw new ArgumentException($"item {item.Id}, choice {i}: {e.Message}", e);
                }
            }

            var (a, n) = Choose(lls, item.Choices);
            acc += a == item.Gold ? 1 : 0;
            norm += n == item.Gold ? 1 : 0;
            progress?.Invoke(q + 1, items.Count);
        }

        return new MultipleChoiceResult((double)acc / items.Count, (double)norm / items.Count, items.Count, sw.Elapsed.TotalSeconds);
    }
}
