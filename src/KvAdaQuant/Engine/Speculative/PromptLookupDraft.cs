namespace KvAdaQuant.Engine.Speculative;

/// <summary>
/// Prompt lookup decoding (transformers' <c>prompt_lookup_num_tokens</c>, llama.cpp's <c>llama-lookup</c> without its
/// statistics): the draft is what followed the last earlier occurrence of the sequence's final n-gram. The longest
/// n-gram (<see cref="MaxNgram"/> tokens) is tried first, then shorter ones down to <see cref="MinNgram"/>; among the
/// occurrences of one n-gram the most recent whose continuation is not empty wins (transformers takes the first; the
/// most recent follows the text being written, such as a list or a quoted passage), and the draft is always as long as
/// asked: where the continuation reaches the end of the sequence it goes on as the text repeats (from the draft's own
/// tokens), so a loop of p tokens is drafted in full. No model runs, so drafting costs a
/// scan of the sequence: it pays off where the output repeats its input (summaries, code edits, extraction) or itself.
/// </summary>
public sealed class PromptLookupDraft : IDraftSource
{
    /// <summary>Creates a source that matches n-grams of <paramref name="minNgram"/> to <paramref name="maxNgram"/> tokens.</summary>
    public PromptLookupDraft(int maxNgram = 3, int minNgram = 1)
    {
        if (maxNgram < 1 || maxNgram > MaxNgramLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(maxNgram), $"--lookup-ngram must be in 1..{MaxNgramLimit}, got {maxNgram}");
        }

        if (minNgram < 1 || minNgram > maxNgram)
        {
            throw new ArgumentOutOfRangeException(nameof(minNgram), $"the shortest n-gram must be in 1..{maxNgram} (the longest), got {minNgram}");
        }

        MaxNgram = maxNgram;
        MinNgram = minNgram;
    }

    /// <summary>The largest n-gram length accepted.</summary>
    public const int MaxNgramLimit = 64;

    /// <summary>Tokens of the longest n-gram matched.</summary>
    public int MaxNgram { get; }

    /// <summary>Tokens of the shortest n-gram matched.</summary>
    public int MinNgram { get; }

    /// <inheritdoc/>
    public int Draft(ReadOnlySpan<int> sequence, Span<int> draft)
    {
        int length = sequence.Length;
        if (draft.IsEmpty)
        {
            return 0;
        }

        for (int n = Math.Min(MaxNgram, length - 1); n >= MinNgram; n--)
        {
            var tail = sequence[^n..];
            // An occurrence starting at s (s + n <= length - 1, so that at least one token follows it), latest first.
            for (int s = length - n - 1; s >= 0; s--)
            {
                if (sequence.Slice(s, n).SequenceEqual(tail))
                {
                    // What followed it, to the end of the sequence and on through the draft itself: a repeating text
                    // (period length - s - n) continues with its period.
                    int from = s + n;
                    for (int i = 0; i < draft.Length; i++)
                    {
                        int at = from + i;
                        draft[i] = at < length ? sequence[at] : draft[at - length];
                    }

                    return draft.Length;
                }
            }
        }

        return 0;
    }
}
