using CsCheck;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// llama.cpp's further samplers in <see cref="Sampler"/>: locally typical, Mirostat 1 and 2, XTC, DRY and top-n-sigma, each
/// on hand-made logits against values worked out by hand; then properties over random logits and settings (a banned
/// token is never drawn, the same seed draws the same tokens) and the defaults leaving the chain as it was.
/// </summary>
public class SamplerChainTests
{
    // ln of the probabilities: at T = 1 the softmax gives them back.
    private static float[] LogitsOf(params double[] probabilities) => [.. probabilities.Select(p => (float)Math.Log(p))];

    private static int[] Kept(Sampler s, float[] logits, int draws = 20_000)
    {
        var seen = new HashSet<int>();
        for (int i = 0; i < draws; i++)
        {
            seen.Add(s.Sample(logits));
        }

        return [.. seen.Order()];
    }

    // p = 0.5, 0.3, 0.15, 0.05: entropy H = 1.1421 nats; |-ln p - H| = 0.449, 0.062, 0.755, 1.854, so the order is
    // token 1, 0, 2, 3 with running mass 0.3, 0.8, 0.95, 1.
    [Theory]
    [InlineData(0f, new[] { 1 })]
    [InlineData(0.2f, new[] { 1 })]
    [InlineData(0.5f, new[] { 0, 1 })]
    [InlineData(0.9f, new[] { 0, 1, 2 })]
    [InlineData(1f, new[] { 0, 1, 2, 3 })]
    public void Typical_keeps_the_tokens_whose_surprise_is_closest_to_the_entropy(float typical, int[] expected)
    {
        var s = new Sampler(1f, seed: 3) { TypicalP = typical };
        Assert.Equal(expected, Kept(s, LogitsOf(0.5, 0.3, 0.15, 0.05)));
    }

    [Fact]
    public void Typical_works_on_the_tokens_top_k_left_renormalized()
    {
        // Top-2 leaves 0.5 and 0.3: q = 0.625, 0.375, H = 0.6616; |-ln q - H| = 0.191, 0.319: token 0 first, whose 0.625 > 0.5.
        var s = new Sampler(1f, topK: 2, seed: 3) { TypicalP = 0.5f };
        Assert.Equal([0], Kept(s, LogitsOf(0.5, 0.3, 0.15, 0.05)));
    }

    // Logits 0, 1, 2, 3, 3.5: mean 1.9, population sigma sqrt(8.2 / 5) = 1.2806.
    [Theory]
    [InlineData(1f, new[] { 3, 4 })]        // threshold 3.5 - 1.28 = 2.22
    [InlineData(1.5f, new[] { 2, 3, 4 })]   // 3.5 - 1.92 = 1.58
    [InlineData(3f, new[] { 0, 1, 2, 3, 4 })]
    [InlineData(-1f, new[] { 0, 1, 2, 3, 4 })] // off
    public void Top_n_sigma_keeps_the_logits_within_n_sigma_of_the_largest(float n, int[] expected)
    {
        float[] logits = [0f, 1f, 2f, 3f, 3.5f];
        var masked = logits.ToArray();
        Sampler.TopNSigmaMask(masked, n);
        Assert.Equal(expected, Enumerable.Range(0, 5).Where(i => masked[i] != float.NegativeInfinity));

        // Through the sampler, at two temperatures (scaling every logit by 1/T scales sigma alike: the same set).
        Assert.Equal(expected, Kept(new Sampler(1f, seed: 4) { TopNSigma = n }, logits));
        Assert.Equal(expected, Kept(new Sampler(0.7f, seed: 4) { TopNSigma = n }, logits));
    }

    [Fact]
    public void Top_n_sigma_leaves_banned_tokens_out_of_the_mean_and_sigma()
    {
        float[] logits = [0f, 1f, float.NegativeInfinity, 2f, 3f, 3.5f];
        Sampler.TopNSigmaMask(logits, 1f);
        Assert.Equal([4, 5], Enumerable.Range(0, 6).Where(i => logits[i] != float.NegativeInfinity));
    }

    // p = 0.4, 0.3, 0.2, 0.1.
    [Theory]
    [InlineData(0.15f, new[] { 2, 3 })]       // 0, 1 and 2 reach 0.15: all but the least likely of them (2) go
    [InlineData(0.25f, new[] { 1, 2, 3 })]    // 0 and 1 reach it: 0 goes
    [InlineData(0.35f, new[] { 0, 1, 2, 3 })] // only one reaches it: nothing goes
    [InlineData(0.6f, new[] { 0, 1, 2, 3 })]  // above 0.5: off
    public void Xtc_removes_the_top_tokens_above_the_threshold_but_the_least_likely_of_them(float threshold, int[] expected)
    {
        var s = new Sampler(1f, seed: 6) { XtcProbability = 1f, XtcThreshold = threshold };
        Assert.Equal(expected, Kept(s, LogitsOf(0.4, 0.3, 0.2, 0.1)));
    }

    [Fact]
    public void Xtc_fires_with_its_probability()
    {
        // Half the time all four stay (tokens 0 and 1 drawn 70% of those), half the time only 2 and 3: 35% of draws are 0 or 1.
        var s = new Sampler(1f, seed: 8) { XtcProbability = 0.5f, XtcThreshold = 0.15f };
        float[] logits = LogitsOf(0.4, 0.3, 0.2, 0.1);
        int top = 0;
        const int draws = 40_000;
        for (int i = 0; i < draws; i++)
        {
            top += s.Sample(logits) <= 1 ? 1 : 0;
        }

        Assert.InRange(top / (double)draws, 0.33, 0.37);
        float[] p = [0.4f, 0.3f, 0.2f, 0.1f];
        Assert.Equal(2, Sampler.XtcCut(p, [0, 1, 2, 3], 0.15f));
        Assert.Equal(0, Sampler.XtcCut(p, [0, 1, 2, 3], 0.35f));
        Assert.Equal(1, Sampler.XtcCut(p, [1, 2, 3], 0.3f)); // renormalized over the candidates: 0.5, 0.33, 0.17

        // A banned token (probability 0) never reaches even a threshold of 0, so it is never the one kept.
        Assert.Equal(1, Sampler.XtcCut([0.7f, 0.3f, 0f], [0, 1, 2], 0f));
    }

    [Theory]
    [InlineData(2, 1.4f)]   // a repeat of 3 ("1 2 3" again): 0.8 * 1.75^(3 - 2)
    [InlineData(3, 0.8f)]   // 0.8 * 1.75^0
    [InlineData(4, 0f)]     // shorter than allowed: no penalty
    public void Dry_takes_multiplier_times_base_to_the_excess_length_from_the_token_that_would_extend_a_repeat(int allowed, float penalty)
    {
        var s = new Sampler { DryMultiplier = 0.8f, DryBase = 1.75f, DryAllowedLength = allowed };
        var logits = new float[10];
        s.ApplyDry(logits, [5, 1, 2, 3, 4, 9, 1, 2, 3]);
        var expected = new float[10];
        expected[4] = -penalty; // 4 followed "1 2 3" before
        Assert.Equal(expected, logits);
        Assert.True(s.HasDry && s.ReadsSequence);
    }

    [Fact]
    public void Dry_repeats_stop_at_a_sequence_breaker_and_a_single_token_breaker_is_not_penalized()
    {
        int[] sequence = [5, 1, 2, 3, 4, 9, 1, 2, 3];
        var logits = new float[10];

        // Token 2 a breaker: a repeat may reach back over only "3", shorter than the 2 allowed.
        new Sampler { DryMultiplier = 0.8f, DrySequenceBreakers = DrySequenceBreakers.FromTokens([[2]]) }.ApplyDry(logits, sequence);
        Assert.All(logits, l => Assert.Equal(0f, l));

        // Token 9 a breaker: "1 2 3" after it still repeats; the breaker 9 itself, which followed "4", is never penalized.
        new Sampler { DryMultiplier = 0.8f, DryAllowedLength = 1, DrySequenceBreakers = DrySequenceBreakers.FromTokens([[9]]) }.ApplyDry(logits, [4, 9, 1, 2, 3, 4, 9, 1, 2, 3, 4]);
        Assert.All(logits, l => Assert.Equal(0f, l)); // every repeat ends at the breaker 9: no penalty for anything

        // A two-token breaker "9 1": its head 9 starts a breaker only where 1 follows.
        var two = new Sampler { DryMultiplier = 1f, DryBase = 2f, DryAllowedLength = 1, DrySequenceBreakers = DrySequenceBreakers.FromTokens([[9, 1]]) };
        logits = new float[10];
        two.ApplyDry(logits, [1, 2, 3, 9, 2, 3]);
        Assert.Equal(-2f, logits[9]); // "2 3" repeats (length 2): 9 followed it; 9 alone is no breaker here
    }

    [Fact]
    public void Dry_window_is_the_last_dry_penalty_last_n_tokens()
    {
        int[] sequence = [5, 1, 2, 3, 4, 9, 1, 2, 3];
        var logits = new float[10];
        new Sampler { DryMultiplier = 0.8f, DryPenaltyLastN = 5 }.ApplyDry(logits, sequence); // 4 9 1 2 3: no repeat
        Assert.All(logits, l => Assert.Equal(0f, l));
        new Sampler { DryMultiplier = 0.8f, DryPenaltyLastN = 8 }.ApplyDry(logits, sequence); // 1 2 3 4 9 1 2 3
        Assert.Equal(-1.4f, logits[4]);
        Assert.False(new Sampler { DryMultiplier = 0.8f, DryPenaltyLastN = 0 }.HasDry);
    }

    [Fact]
    public void Dry_penalty_is_multiplier_times_base_to_the_excess_for_any_repeat_length()
    {
        // X (L distinct tokens), then 5, 6, then X again: 5 would extend a repeat of exactly L.
        Gen.Select(Gen.Int[1, 30], Gen.Int[1, 6], Gen.Float[0.1f, 3f], Gen.Float[1f, 3f]).Sample((length, allowed, multiplier, dryBase) =>
        {
            int[] x = [.. Enumerable.Range(10, length)];
            int[] sequence = [.. x, 5, 6, .. x];
            var logits = new float[64];
            new Sampler { DryMultiplier = multiplier, DryBase = dryBase, DryAllowedLength = allowed }.ApplyDry(logits, sequence);
            float expected = length >= allowed ? -(float)(multiplier * Math.Pow(dryBase, length - allowed)) : 0f;
            Assert.Equal(expected, logits[5]);
            Assert.All(logits.Where((_, i) => i != 5), l => Assert.Equal(0f, l));
        });
    }

    [Fact]
    public void Dry_breakers_from_strings_are_matched_on_token_text()
    {
        using var model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        var b = DrySequenceBreakers.FromStrings(tok, DrySequenceBreakers.Defaults);
        byte[][] breakers = [.. DrySequenceBreakers.Defaults.Select(System.Text.Encoding.UTF8.GetBytes)];
        int single = 0;
        for (int t = 0; t < tok.VocabSize; t++)
        {
            byte[] text = tok.DecodeBytes(-1, t);
            bool holds = breakers.Any(x => text.AsSpan().IndexOf(x) >= 0);
            Assert.Equal(holds, b.IsSingleTokenBreaker(t));
            single += holds ? 1 : 0;
        }

        Assert.True(single > 0);
        Assert.True(b.IsSingleTokenBreaker(tok.Encode("\n", addBos: false)[^1])); // the newline byte token

        // A longer breaker: tokens whose text ends with its start are heads, the rest of it tokenized their tail.
        var phrase = DrySequenceBreakers.FromStrings(tok, ["Once upon"]);
        Assert.True(phrase.Count > 0);
        for (int t = 0; t < tok.VocabSize; t++)
        {
            foreach (int[] tail in phrase.TailsOf(t).Where(x => x.Length > 0))
            {
                string head = System.Text.Encoding.UTF8.GetString(tok.DecodeBytes(-1, t));
                Assert.Contains(Enumerable.Range(1, 8), i => head.EndsWith("Once upon"[..i], StringComparison.Ordinal));
            }
        }

        Assert.Equal(0, DrySequenceBreakers.FromStrings(tok, ["", ""]).Count);
    }

    [Fact]
    public void Mirostat_2_keeps_the_tokens_within_mu_bits_and_moves_mu_by_the_surprise_drawn()
    {
        // tau 1: mu starts at 2. Surprises -log2 p: 1, 1.74, 2.74, 4.32: tokens 0 and 1 stay, renormalized to 0.625, 0.375.
        float[] logits = LogitsOf(0.5, 0.3, 0.15, 0.05);
        var s = new Sampler(1f, seed: 11) { Mirostat = 2, MirostatTau = 1f, MirostatEta = 0.1f };
        Assert.Equal(2f, s.MirostatMu);
        int token = s.Sample(logits);
        Assert.Contains(token, new[] { 0, 1 });
        double share = token == 0 ? 0.625 : 0.375;
        Assert.Equal(2 - (0.1 * (-Math.Log2(share) - 1)), s.MirostatMu, 5); // 2.0322 after token 0, 1.9585 after token 1
        s.Reset();
        Assert.Equal(2f, s.MirostatMu);

        // With eta 0 mu stays at 2 tau: only tokens 0 and 1 are ever drawn.
        Assert.Equal([0, 1], Kept(new Sampler(1f, seed: 12) { Mirostat = 2, MirostatTau = 1f, MirostatEta = 0f }, logits));
    }

    [Fact]
    public void Mirostat_does_not_move_at_temperature_0_which_is_greedy()
    {
        var s = new Sampler(0f) { Mirostat = 2 };
        s.Sample(LogitsOf(0.5, 0.3, 0.2));
        Assert.Equal(10f, s.MirostatMu);
    }

    [Fact]
    public void Each_generation_starts_mirostat_over()
    {
        using var model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        using var t = new Transformer(model, 1);
        using var session = new InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(128), half: false));
        var generator = new Generator(session, model.Tokenizer!);
        var prompt = model.Tokenizer!.Encode("Once upon a time", addBos: true);
        var sampler = new Sampler(1f, seed: 3) { Mirostat = 2, MirostatTau = 3f };
        generator.Generate(prompt, 0, 20, sampler);
        Assert.NotEqual(6f, sampler.MirostatMu);
        float atStart = 0;
        generator.Generate(prompt, 0, 20, sampler, afterPrefill: () => atStart = sampler.MirostatMu);
        Assert.Equal(6f, atStart);
    }

    [Fact]
    public void Mirostat_1_top_k_follows_the_zipf_estimate()
    {
        // p_i proportional to 1 / i^1.5 over 1000 tokens: the estimate s is 1.5, so with mu 4
        // k = (0.5 * 2^4 / (1 - 1000^-0.5))^(1 / 1.5) = 4.09: the 4 most likely stay.
        double[] zipf = [.. Enumerable.Range(1, 1000).Select(i => 1 / Math.Pow(i, 1.5))];
        double z = zipf.Sum();
        float[] p = [.. zipf.Select(v => (float)(v / z))];
        int[] sorted = [.. Enumerable.Range(0, 1000)];
        double k = Math.Pow(0.5 * Math.Pow(2, 4) / (1 - Math.Pow(1000, -0.5)), 1 / 1.5);
        Assert.Equal(4, (int)k);
        Assert.Equal(4, Sampler.MirostatV1Count(p, sorted, 4f, 1000));
        Assert.Equal(1, Sampler.MirostatV1Count(p, sorted, 0f, 1000)); // (0.5 / 0.968)^(2/3) = 0.64: at least one

        var s = new Sampler(1f, seed: 2) { Mirostat = 1, MirostatTau = 2f, MirostatEta = 0f }; // mu 4 throughout
        Assert.Equal([0, 1, 2, 3], Kept(s, [.. p.Select(v => MathF.Log(v))], 5_000));
    }

    [Fact]
    public void Mirostat_replaces_top_k_and_the_others()
    {
        // Top-k 1 would leave token 0 only; Mirostat 2 with mu 2 draws 0 and 1.
        var s = new Sampler(1f, topK: 1, seed: 12) { Mirostat = 2, MirostatTau = 1f, MirostatEta = 0f, MinP = 0.9f, XtcProbability = 1f, TypicalP = 0.1f };
        Assert.Equal([0, 1], Kept(s, LogitsOf(0.5, 0.3, 0.15, 0.05)));
    }

    [Theory]
    [InlineData("TypicalP", 2f, "--typical must be in [0, 1], got 2")]
    [InlineData("TypicalP", -0.5f, "--typical must be in [0, 1], got -0.5")]
    [InlineData("Mirostat", 3f, "--mirostat must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0), got 3")]
    [InlineData("MirostatTau", -1f, "--mirostat-ent must be finite and >= 0, got -1")]
    [InlineData("MirostatEta", float.NaN, "--mirostat-lr must be finite and >= 0, got NaN")]
    [InlineData("XtcProbability", 1.5f, "--xtc-probability must be in [0, 1], got 1.5")]
    [InlineData("XtcThreshold", -0.1f, "--xtc-threshold must be in [0, 1], got -0.1")]
    [InlineData("DryMultiplier", -1f, "--dry-multiplier must be finite and >= 0 (0 = off), got -1")]
    [InlineData("DryBase", 0.5f, "--dry-base must be finite and >= 1, got 0.5")]
    [InlineData("DryAllowedLength", -1f, "--dry-allowed-length must be >= 0, got -1")]
    [InlineData("DryPenaltyLastN", -2f, "--dry-penalty-last-n must be >= -1 (-1 = the whole sequence, 0 = off), got -2")]
    [InlineData("TopNSigma", float.PositiveInfinity, "--top-n-sigma must be finite (<= 0 = off), got ")]
    public void Out_of_range_settings_are_named(string setting, float value, string message)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => setting switch
        {
            "TypicalP" => new Sampler { TypicalP = value },
            "Mirostat" => new Sampler { Mirostat = (int)value },
            "MirostatTau" => new Sampler { MirostatTau = value },
            "MirostatEta" => new Sampler { MirostatEta = value },
            "XtcProbability" => new Sampler { XtcProbability = value },
            "XtcThreshold" => new Sampler { XtcThreshold = value },
            "DryMultiplier" => new Sampler { DryMultiplier = value },
            "DryBase" => new Sampler { DryBase = value },
            "DryAllowedLength" => new Sampler { DryAllowedLength = (int)value },
            "DryPenaltyLastN" => new Sampler { DryPenaltyLastN = (int)value },
            _ => new Sampler { TopNSigma = value },
        });
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_defaults_are_off_and_basic()
    {
        var s = new Sampler(0.8f, 40, 0.9f, 7);
        Assert.True(s.IsBasic);
        Assert.False(s.ReadsSequence);
        Assert.Equal((1f, 0, 5f, 0.1f, 0f, 0.1f, 0f, 1.75f, 2, -1, -1f), (s.TypicalP, s.Mirostat, s.MirostatTau, s.MirostatEta, s.XtcProbability, s.XtcThreshold, s.DryMultiplier, s.DryBase, s.DryAllowedLength, s.DryPenaltyLastN, s.TopNSigma));
        Assert.False(new Sampler { TypicalP = 0.9f }.IsBasic);
        Assert.False(new Sampler { Mirostat = 1 }.IsBasic);
        Assert.False(new Sampler { XtcProbability = 0.5f }.IsBasic);
        Assert.True(new Sampler { XtcProbability = 0.5f, XtcThreshold = 0.6f }.IsBasic); // XTC cannot fire
        Assert.False(new Sampler { DryMultiplier = 0.5f }.IsBasic);
        Assert.False(new Sampler { TopNSigma = 1f }.IsBasic);
    }

    private static readonly Gen<(float[] Logits, Sampler Sampler, Func<Sampler> Again)> Case =
        Gen.Select(
            Gen.Float[-8f, 8f].Array[2, 40],
            Gen.Int[0, int.MaxValue],
            Gen.Select(Gen.Float[0.1f, 2f], Gen.Int[0, 5], Gen.Float[0.05f, 1f], Gen.Float[0f, 0.5f]),
            Gen.Select(Gen.Float[0f, 1f], Gen.Float[0f, 1f], Gen.Float[0f, 0.6f], Gen.Float[-1f, 3f]),
            Gen.Select(Gen.Int[0, 2], Gen.Float[0f, 8f], Gen.Float[0f, 1f], Gen.ULong),
            Gen.Float[0f, 2f])
        .Select((logits, banMask, basic, more, mirostat, dry) =>
        {
            // Ban some tokens (never all) through the logit bias.
            var bias = new Dictionary<int, float>();
            for (int i = 1; i < logits.Length; i++)
            {
                if ((banMask >> (i % 31) & 1) != 0)
                {
                    bias[i] = float.NegativeInfinity;
                }
            }

            Sampler Make() => new(basic.Item1, basic.Item2, basic.Item3, mirostat.Item4)
            {
                MinP = basic.Item4,
                TypicalP = more.Item1,
                XtcProbability = more.Item2,
                XtcThreshold = more.Item3,
                TopNSigma = more.Item4,
                Mirostat = mirostat.Item1,
                MirostatTau = mirostat.Item2,
                MirostatEta = mirostat.Item3,
                DryMultiplier = dry,
                DryAllowedLength = 1,
                LogitBias = bias,
            };
            return (logits, Make(), (Func<Sampler>)Make);
        });

    [Fact]
    public void A_banned_token_is_never_drawn_and_the_same_seed_draws_the_same_tokens()
    {
        Case.Sample(c =>
        {
            var again = c.Again();
            var sequence = new List<int> { 0, 1, 0, 1 };
            var tokens = new List<int>();
            for (int i = 0; i < 12; i++)
            {
                int t = c.Sampler.Sample(c.Logits, [.. sequence.Select(x => x % c.Logits.Length)]);
                Assert.InRange(t, 0, c.Logits.Length - 1);
                Assert.False(c.Sampler.LogitBias.TryGetValue(t, out float b) && float.IsNegativeInfinity(b), $"drew banned token {t}");
                tokens.Add(t);
                sequence.Add(t);
            }

            sequence = [0, 1, 0, 1];
            foreach (int expected in tokens)
            {
                int t = again.Sample(c.Logits, [.. sequence.Select(x => x % c.Logits.Length)]);
                Assert.Equal(expected, t);
                sequence.Add(t);
            }
        }, iter: 300);
    }
}
