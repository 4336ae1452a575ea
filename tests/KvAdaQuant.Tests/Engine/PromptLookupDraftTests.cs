using CsCheck;
using KvAdaQuant.Engine.Speculative;

namespace KvAdaQuant.Tests.Engine;

public class PromptLookupDraftTests
{
    private static int[] Draft(PromptLookupDraft source, int[] sequence, int length)
    {
        var draft = new int[length];
        int n = source.Draft(sequence, draft);
        return draft[..n];
    }

    [Fact]
    public void The_longest_ngram_wins_and_its_latest_occurrence()
    {
        // ... 7 8 9 | 1 2 3 | 5 9 | 2 3 | 4 4 ... tail "2 3": the 2-gram's latest earlier occurrence is at 7, followed by 4 4.
        int[] seq = [7, 8, 9, 1, 2, 3, 5, 9, 2, 3, 4, 4, 6, 2, 3];
        Assert.Equal([4, 4, 6], Draft(new PromptLookupDraft(maxNgram: 2), seq, 3));

        // With 3-grams first, "6 2 3" never occurred before; "2 3" did (latest at 8).
        Assert.Equal([4, 4, 6], Draft(new PromptLookupDraft(maxNgram: 3), seq, 3));

        // "1 2 3" occurred once, at 3, so a 3-gram tail "1 2 3" drafts what followed it there (5 9 2), not the 2-gram's.
        int[] seq2 = [1, 2, 3, 5, 9, 2, 3, 8, 1, 2, 3];
        Assert.Equal([5, 9, 2], Draft(new PromptLookupDraft(maxNgram: 3), seq2, 3));
        Assert.Equal([8, 1, 2], Draft(new PromptLookupDraft(maxNgram: 2), seq2, 3));
    }

    [Fact]
    public void A_repeating_text_is_drafted_in_full_along_its_period()
    {
        int[] seq = [1, 10, 11, 12, 10, 11, 12, 10];
        // tail "12 10" last occurred at 3; after it came 11 12 10, then (the end) the period goes on: 11 12 10 11.
        Assert.Equal([11, 12, 10, 11, 12, 10, 11], Draft(new PromptLookupDraft(maxNgram: 2), seq, 7));

        // A single token repeated: its 1-gram's latest occurrence is the one just before it.
        Assert.Equal([5, 5, 5, 5], Draft(new PromptLookupDraft(maxNgram: 1), [1, 5, 5], 4));
    }

    [Fact]
    public void No_match_no_draft()
    {
        Assert.Empty(Draft(new PromptLookupDraft(maxNgram: 3), [1, 2, 3, 4, 5], 4));
        Assert.Empty(Draft(new PromptLookupDraft(maxNgram: 3), [1], 4));
        Assert.Empty(Draft(new PromptLookupDraft(maxNgram: 3), [], 4));

        // The shortest n-gram bounds the search: 1-grams would match "2", 2-grams do not.
        Assert.Empty(Draft(new PromptLookupDraft(maxNgram: 3, minNgram: 2), [2, 7, 3, 2], 4));
        Assert.Equal([7, 3, 2], Draft(new PromptLookupDraft(maxNgram: 3, minNgram: 1), [2, 7, 3, 2], 3));
    }

    [Theory]
    [InlineData(0, 1, "--lookup-ngram must be in 1..64, got 0")]
    [InlineData(65, 1, "--lookup-ngram must be in 1..64, got 65")]
    [InlineData(2, 3, "the shortest n-gram must be in 1..2 (the longest), got 3")]
    [InlineData(2, 0, "the shortest n-gram must be in 1..2 (the longest), got 0")]
    public void Bad_sizes_are_refused(int max, int min, string message)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new PromptLookupDraft(max, min));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Matches_a_brute_force_search_on_random_sequences()
    {
        // Property: the draft is what a direct search (longest n first, latest occurrence first, continued periodically) gives.
        Gen.Select(Gen.Int[0, 4].Array[0, 40], Gen.Int[1, 4], Gen.Int[1, 6]).Sample((seq, maxN, length) =>
        {
            var source = new PromptLookupDraft(maxN);
            var actual = Draft(source, seq, length);
            int[] expected = [];
            for (int n = Math.Min(maxN, seq.Length - 1); n >= 1 && expected.Length == 0; n--)
            {
                for (int s = seq.Length - n - 1; s >= 0; s--)
                {
                    if (seq.Skip(s).Take(n).SequenceEqual(seq.Skip(seq.Length - n)))
                    {
                        var extended = seq.ToList();
                        for (int i = 0; i < length; i++)
                        {
                            extended.Add(extended[s + n + i]);
                        }

                        expected = extended.Skip(seq.Length).ToArray();
                        break;
                    }
                }
            }

            Assert.Equal(expected, actual);
        });
    }
}
