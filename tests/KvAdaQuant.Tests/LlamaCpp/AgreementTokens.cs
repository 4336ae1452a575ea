namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>Token streams the agreement tests feed both engines.</summary>
internal static class AgreementTokens
{
    /// <summary>BOS, then <paramref name="n"/> - 1 seeded random ids from 3 (past the special tokens) to the vocabulary's end.</summary>
    public static int[] Random(int n, int vocab, int seed)
    {
        var rng = new Random(seed);
        var t = new int[n];
        t[0] = 1;
        for (int i = 1; i < n; i++)
        {
            t[i] = rng.Next(3, vocab);
        }

        return t;
    }
}
