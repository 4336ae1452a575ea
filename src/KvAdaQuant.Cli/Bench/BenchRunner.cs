namespace KvAdaQuant.Cli.Bench;

/// <summary>
/// Times prefill and decode of engines on the same tokens: per context, a prompt of ctx - decodeTokens tokens and then
/// decodeTokens single-token steps (so decode runs at depth ctx - decodeTokens .. ctx), one untimed warm-up per engine,
/// then <c>runs</c> timed runs with the engines alternated run by run (the first engine swaps each run), reporting medians.
/// </summary>
internal static class BenchRunner
{
    public static BenchContextResult Run(IReadOnlyList<IBenchEngine> engines, int ctx, int decodeTokens, int runs, int vocab, Action<string>? log)
    {
        int prompt = ctx - decodeTokens;
        var tokens = SampleTokens(ctx, vocab, seed: ctx);
        var promptTokens = tokens.AsSpan(0, prompt).ToArray();
        var decodeIds = tokens.AsSpan(prompt, decodeTokens).ToArray();
        var prefill = engines.Select(_ => new List<double>()).ToArray();
        var decode = engines.Select(_ => new List<double>()).ToArray();
        foreach (var e in engines)
        {
            e.Prepare(ctx);
            e.Prefill(promptTokens);
            e.Decode(decodeIds);
        }

        for (int r = 0; r < runs; r++)
        {
            for (int j = 0; j < engines.Count; j++)
            {
                int i = (r % 2 == 0) ? j : engines.Count - 1 - j;
                double tp = engines[i].Prefill(promptTokens);
                double td = engines[i].Decode(decodeIds);
                prefill[i].Add(prompt / tp);
                decode[i].Add(decodeTokens / td);
                log?.Invoke($"ctx {ctx} run {r + 1}/{runs} {engines[i].Name}: prefill {prompt / tp:F1} tok/s, decode {decodeTokens / td:F2} tok/s");
            }
        }

        var perEngine = engines.Select((e, i) => new BenchEngineResult(e.Name, e.CacheDescription, Median(prefill[i]), Median(decode[i]), e.KvBytes)).ToArray();
        return new BenchContextResult(ctx, prompt, decodeTokens, perEngine);
    }

    public static double Median(List<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[(s.Length / 2) - 1] + s[s.Length / 2]);
    }

    // Deterministic ids away from the special tokens at the start of the vocabulary.
    private static int[] SampleTokens(int n, int vocab, int seed)
    {
        var rng = new Random(seed);
        int lo = Math.Min(3, vocab - 1);
        var t = new int[n];
        for (int i = 0; i < n; i++)
        {
            t[i] = rng.Next(lo, vocab);
        }

        return t;
    }
}
