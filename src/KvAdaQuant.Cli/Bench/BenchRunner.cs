namespace KvAdaQuant.Cli.Bench;

/// <summary>
/// Times prefill and decode of engines on the same tokens. Per context: a prompt of ctx - runs x decodeTokens tokens,
/// an untimed warm-up (a short prompt and a few steps), <c>prefillRuns</c> timed prefills of the whole prompt, then
/// <c>runs</c> timed decode segments of decodeTokens single-token steps each, continuing from the last prefill (so
/// decode runs at depth prompt .. ctx). Engines are alternated run by run (the first engine swaps each run), each timed run after
/// <c>settleMs</c> of idle (see <see cref="DefaultSettleMs"/>); medians are reported. Decoding in segments after one prefill keeps long contexts affordable: a 16k prompt is prefilled once
/// per engine, not once per run.
/// </summary>
internal static class BenchRunner
{
    /// <summary>
    /// Milliseconds of idle before each timed run when engines alternate (<c>--settle-ms</c>): llama.cpp's OpenMP
    /// threads spin on after its run (libgomp's default wait policy) and took the cores from the next kvaq run
    /// (stories3M-q80 at ctx 128: 32-token prefill 4,200 tok/s right after llama.cpp against 14,700 alone).
    /// </summary>
    public const int DefaultSettleMs = 50;

    /// <summary>Prompt length for <paramref name="ctx"/>: what is left after the decode segments.</summary>
    public static long PromptLength(int ctx, int decodeTokens, int runs) => ctx - ((long)runs * decodeTokens);

    public static BenchContextResult Run(IReadOnlyList<IBenchEngine> engines, int ctx, int decodeTokens, int runs, int prefillRuns, int vocab, Action<string>? log, int settleMs = DefaultSettleMs)
    {
        long promptLength = PromptLength(ctx, decodeTokens, runs);
        if (promptLength < 1)
        {
            throw new ArgumentException($"--ctx {ctx} leaves no prompt after {runs} runs x {decodeTokens} decode tokens");
        }

        int prompt = (int)promptLength;

        var tokens = SampleTokens(ctx, vocab, seed: ctx);
        var promptTokens = tokens.AsSpan(0, prompt).ToArray();
        var prefill = engines.Select(_ => new List<double>()).ToArray();
        var decode = engines.Select(_ => new List<double>()).ToArray();
        foreach (var e in engines)
        {
            e.Prepare(ctx);
            e.Prefill(promptTokens.AsSpan(0, Math.Min(prompt, 32)));
            e.Decode(tokens.AsSpan(prompt, Math.Min(decodeTokens, 4)));
        }

        for (int r = 0; r < prefillRuns; r++)
        {
            for (int j = 0; j < engines.Count; j++)
            {
                int i = Order(r, j, engines.Count);
                Settle(engines.Count, settleMs);
                double tp = engines[i].Prefill(promptTokens);
                long prefilled = (long)prompt * engines[i].Sequences;
                prefill[i].Add(prefilled / tp);
                log?.Invoke($"ctx {ctx} prefill run {r + 1}/{prefillRuns} {engines[i].Name}: {Times(engines[i])}{prompt} tokens, {prefilled / tp:F1} tok/s");
            }
        }

        for (int r = 0; r < runs; r++)
        {
            var segment = tokens.AsSpan(prompt + (r * decodeTokens), decodeTokens);
            for (int j = 0; j < engines.Count; j++)
            {
                int i = Order(r, j, engines.Count);
                Settle(engines.Count, settleMs);
                double td = engines[i].Decode(segment);
                double decoded = (double)decodeTokens * engines[i].Sequences;
                decode[i].Add(decoded / td);
                log?.Invoke($"ctx {ctx} decode run {r + 1}/{runs} {engines[i].Name}: {Times(engines[i])}depth {prompt + (r * decodeTokens)}, {decoded / td:F2} tok/s");
            }
        }

        var perEngine = engines.Select((e, i) => new BenchEngineResult(e.Name, e.CacheDescription, Median(prefill[i]), Median(decode[i]), e.KvBytes, e.Sequences)).ToArray();
        return new BenchContextResult(ctx, prompt, decodeTokens, perEngine);
    }

    private static string Times(IBenchEngine e) => e.Sequences > 1 ? $"{e.Sequences} x " : string.Empty;

    // Lets the other engine's threads go idle before a timed run; nothing to wait for with one engine.
    private static void Settle(int engines, int ms)
    {
        if (engines > 1 && ms > 0)
        {
            Thread.Sleep(ms);
        }
    }

    public static double Median(List<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[(s.Length / 2) - 1] + s[s.Length / 2]);
    }

    private static int Order(int run, int slot, int count) => (run % 2 == 0) ? slot : count - 1 - slot;

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
