using System.Buffers;
using System.Numerics.Tensors;

namespace KvAdaQuant.Engine;

/// <summary>Log-probabilities from logits: ln softmax, and the most likely tokens of a position.</summary>
public static class TokenLogprobs
{
    /// <summary>
    /// The log-probability of <paramref name="token"/> under softmax(<paramref name="logits"/>), ln p = l_token − max −
    /// ln Σ exp(l − max), and the <paramref name="top"/> largest logits' tokens with theirs, most likely first (ties: lower id).
    /// </summary>
    public static TokenLogprob Of(ReadOnlySpan<float> logits, int token, int top)
    {
        if (logits.IsEmpty)
        {
            throw new ArgumentException("no logits", nameof(logits));
        }

        if ((uint)token >= (uint)logits.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(token), $"token {token} is outside the vocabulary of {logits.Length}");
        }

        if (top < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(top), $"top must be >= 0, got {top}");
        }

        float lse = LogSumExp(logits);
        var best = TopTokens(logits, Math.Min(top, logits.Length));
        var entries = new TopLogprob[best.Length];
        for (int i = 0; i < best.Length; i++)
        {
            entries[i] = new TopLogprob(best[i], logits[best[i]] - lse);
        }

        return new TokenLogprob(token, logits[token] - lse, entries);
    }

    /// <summary>ln Σ exp(l): the largest logit plus ln Σ exp(l − max), summed in double.</summary>
    public static float LogSumExp(ReadOnlySpan<float> logits)
    {
        float max = TensorPrimitives.Max(logits);
        if (!float.IsFinite(max))
        {
            throw new ArgumentException($"the logits are not finite (largest {max})", nameof(logits));
        }

        float[] scratch = ArrayPool<float>.Shared.Rent(logits.Length);
        try
        {
            var e = scratch.AsSpan(0, logits.Length);
            TensorPrimitives.Subtract(logits, max, e);
            TensorPrimitives.Exp(e, e);
            double sum = 0;
            foreach (float x in e)
            {
                sum += x;
            }

            return (float)(max + Math.Log(sum));
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <summary>The ids of the <paramref name="count"/> largest logits, largest first, ties by lower id.</summary>
    public static int[] TopTokens(ReadOnlySpan<float> logits, int count)
    {
        var ids = new int[count];
        if (count == 0)
        {
            return ids;
        }

        int n = 0;
        for (int t = 0; t < logits.Length; t++)
        {
            float v = logits[t];
            if (n == count && !(v > logits[ids[n - 1]]))
            {
                continue; // not above the smallest kept (a tie keeps the lower id, seen first)
            }

            int i = n < count ? n++ : n - 1;
            while (i > 0 && v > logits[ids[i - 1]])
            {
                ids[i] = ids[i - 1];
                i--;
            }

            ids[i] = t;
        }

        return ids;
    }
}
