namespace KvAdaQuant.Cli.Bench;

/// <summary>All engines at one context.</summary>
internal sealed record BenchContextResult(int Ctx, int PrefillTokens, int DecodeTokens, IReadOnlyList<BenchEngineResult> Engines)
{
    /// <summary>The flat JSON object of issue 6: <c>ctx</c>, <c>kvaq.decode_tokens_per_second</c>, ..., <c>decode_ratio</c>.</summary>
    public Dictionary<string, object> ToJson()
    {
        var d = new Dictionary<string, object>
        {
            ["ctx"] = Ctx,
            ["prefill_tokens"] = PrefillTokens,
            ["decode_tokens"] = DecodeTokens,
        };
        foreach (var e in Engines)
        {
            d[$"{e.Name}.cache"] = e.Cache;
            d[$"{e.Name}.prefill_tokens_per_second"] = Math.Round(e.PrefillTokensPerSecond, 3);
            d[$"{e.Name}.decode_tokens_per_second"] = Math.Round(e.DecodeTokensPerSecond, 3);
            d[$"{e.Name}.kv_bytes"] = e.KvBytes;
            if (e.Sequences > 1)
            {
                d[$"{e.Name}.sequences"] = e.Sequences;
                d[$"{e.Name}.decode_tokens_per_second_per_sequence"] = Math.Round(e.DecodeTokensPerSecond / e.Sequences, 3);
            }
        }

        if (Engines.Count == 2)
        {
            d["prefill_ratio"] = Math.Round(Engines[0].PrefillTokensPerSecond / Engines[1].PrefillTokensPerSecond, 4);
            d["decode_ratio"] = Math.Round(Engines[0].DecodeTokensPerSecond / Engines[1].DecodeTokensPerSecond, 4);
        }

        return d;
    }
}
