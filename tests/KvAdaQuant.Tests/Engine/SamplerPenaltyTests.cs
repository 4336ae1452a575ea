using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// The sampler's repetition, presence and frequency penalties and min-p: the arithmetic of llama.cpp's penalties sampler,
/// the window of recent tokens, and their wiring through <see cref="Generator"/> and <see cref="ChatSession"/> (the prompt
/// and the generated tokens count, across chat turns too).
/// </summary>
public class SamplerPenaltyTests
{
    [Fact]
    public void Penalties_divide_positive_multiply_negative_then_subtract_count_and_presence()
    {
        var s = new Sampler { RepeatPenalty = 2f, FrequencyPenalty = 0.5f, PresencePenalty = 0.25f };
        float[] logits = [2f, -1f, 0.5f, 3f];
        s.ApplyPenalties(logits, [0, 1, 0, 3]);
        // token 0 twice: 2/2 - 2*0.5 - 0.25; token 1 once: -1*2 - 0.5 - 0.25; token 2 untouched; token 3 once: 3/2 - 0.5 - 0.25.
        Assert.Equal([-0.25f, -2.75f, 0.5f, 0.75f], logits);

        // Again with the same sampler: the counts start from zero each time.
        logits = [2f, -1f, 0.5f, 3f];
        s.ApplyPenalties(logits, [3]);
        Assert.Equal([2f, -1f, 0.5f, 0.75f], logits);
    }

    [Theory]
    [InlineData(2, new[] { 0.5f, 0.5f, 2f })]   // the last two tokens: 0 and 1
    [InlineData(3, new[] { 0.5f, 0.5f, 1f })]   // 2, 0 and 1
    [InlineData(-1, new[] { 0.5f, 0.5f, 1f })]  // the whole sequence
    [InlineData(0, new[] { 1f, 1f, 2f })]       // off
    public void Only_the_last_repeat_last_n_tokens_are_penalized(int lastN, float[] expected)
    {
        var s = new Sampler { RepeatPenalty = 2f, RepeatLastN = lastN };
        float[] logits = [1f, 1f, 2f];
        s.ApplyPenalties(logits, [2, 0, 1]);
        Assert.Equal(expected, logits);
        Assert.Equal(lastN != 0, s.HasPenalties);
    }

    [Fact]
    public void Greedy_picks_the_best_token_after_the_penalty()
    {
        float[] logits = [3f, 2.9f, -5f];
        Assert.Equal(0, new Sampler().Sample(logits, [0]));
        Assert.Equal(1, new Sampler { RepeatPenalty = 1.1f }.Sample(logits, [0]));
        Assert.Equal(1, new Sampler { PresencePenalty = 0.2f }.Sample(logits, [0, 0]));
        Assert.Equal(0, new Sampler { FrequencyPenalty = 0.06f }.Sample(logits, [0]));
        Assert.Equal(1, new Sampler { FrequencyPenalty = 0.06f }.Sample(logits, [0, 0]));
        Assert.Equal([3f, 2.9f, -5f], logits); // the caller's logits are not changed
    }

    [Theory]
    [InlineData(0.3f, new[] { 2, 3, 5 })]
    [InlineData(0.5f, new[] { 3, 5 })]
    [InlineData(1f, new[] { 3 })]
    [InlineData(0f, new[] { 0, 1, 2, 3, 4, 5 })]
    public void Min_p_keeps_the_tokens_at_least_that_fraction_as_likely_as_the_best(float minP, int[] expected)
    {
        // Probabilities at T = 1: token 3 0.43, token 5 0.26, token 2 0.16, token 1 0.058, token 0 0.021, token 4 0.008.
        float[] logits = [0f, 1f, 2f, 3f, -1f, 2.5f];
        var s = new Sampler(1f, seed: 5) { MinP = minP };
        var seen = new HashSet<int>();
        for (int i = 0; i < 20_000; i++)
        {
            seen.Add(s.Sample(logits));
        }

        Assert.Equal(expected, seen.Order());
    }

    [Theory]
    [InlineData("MinP", 1.5f, "--min-p must be in [0, 1], got 1.5")]
    [InlineData("MinP", -0.1f, "--min-p must be in [0, 1], got -0.1")]
    [InlineData("RepeatPenalty", 0f, "--repeat-penalty must be finite and > 0 (1 = off), got 0")]
    [InlineData("RepeatPenalty", float.NaN, "--repeat-penalty must be finite and > 0 (1 = off), got NaN")]
    [InlineData("PresencePenalty", float.PositiveInfinity, "--presence-penalty must be finite, got ")]
    [InlineData("FrequencyPenalty", float.NaN, "--frequency-penalty must be finite, got NaN")]
    public void Out_of_range_settings_are_named(string setting, float value, string message)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => setting switch
        {
            "MinP" => new Sampler { MinP = value },
            "RepeatPenalty" => new Sampler { RepeatPenalty = value },
            "PresencePenalty" => new Sampler { PresencePenalty = value },
            _ => new Sampler { FrequencyPenalty = value },
        });
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Repeat_last_n_below_minus_one_and_tokens_outside_the_vocabulary_are_named()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler { RepeatLastN = -2 });
        Assert.StartsWith("--repeat-last-n must be >= -1 (-1 = the whole sequence, 0 = off), got -2", e.Message, StringComparison.Ordinal);
        var s = new Sampler { RepeatPenalty = 1.2f };
        e = Assert.Throws<ArgumentOutOfRangeException>(() => s.Sample([1f, 2f], [0, 7]));
        Assert.StartsWith("token 7 of the sequence is outside the vocabulary of 2", e.Message, StringComparison.Ordinal);
        // The failed call left no counts behind.
        float[] logits = [1f, 2f];
        s.ApplyPenalties(logits, [1]);
        Assert.Equal([1f, 2f / 1.2f], logits);
    }

    /// <summary>An independent statement of the penalties: counts by LINQ over the window, applied to a copy.</summary>
    private static float[] Reference(ReadOnlySpan<float> logits, IReadOnlyList<int> sequence, float repeat, int lastN, float presence, float frequency)
    {
        var l = logits.ToArray();
        var window = lastN < 0 ? sequence : sequence.Skip(Math.Max(0, sequence.Count - lastN));
        foreach (var g in window.GroupBy(t => t))
        {
            float v = l[g.Key];
            v = v > 0 ? v / repeat : v * repeat;
            l[g.Key] = v - (g.Count() * frequency) - presence;
        }

        return l;
    }

    [Theory]
    [InlineData(1.3f, 64, 0f, 0f)]
    [InlineData(1.1f, -1, 0.2f, 0.1f)]
    [InlineData(1f, 16, 0.5f, 0f)]
    public void Generator_penalizes_the_prompt_and_the_generated_tokens(float repeat, int lastN, float presence, float frequency)
    {
        using var model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        using var t = new Transformer(model, 1);
        var tok = model.Tokenizer!;
        var prompt = tok.Encode("Once upon a time, there was a little girl. The girl", addBos: true);
        var sampler = new Sampler { RepeatPenalty = repeat, RepeatLastN = lastN, PresencePenalty = presence, FrequencyPenalty = frequency };
        using var s1 = new InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(256), half: false));
        var got = new Generator(s1, tok).Generate(prompt, 40, sampler);

        // By hand: greedy over the reference-penalized logits of the whole sequence so far.
        using var s2 = new InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(256), half: false));
        var seq = prompt.ToList();
        var logits = s2.Prefill(prompt.ToArray()).ToArray();
        var expected = new List<int>();
        for (int i = 0; i < 40; i++)
        {
            int next = Sampler.ArgMax(Reference(logits, seq, repeat, lastN, presence, frequency));
            expected.Add(next);
            seq.Add(next);
            logits = s2.Decode(next).ToArray();
        }

        Assert.Equal(expected, got.Tokens);

        // And the penalties did change the story (else this test could not fail).
        using var s3 = new InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(256), half: false));
        Assert.NotEqual(got.Tokens, new Generator(s3, tok).Generate(prompt, 40, new Sampler()).Tokens);
    }

    [Fact]
    public void A_chat_turn_is_penalized_over_the_whole_conversation_as_a_fresh_generation_is()
    {
        using var model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        using var t = new Transformer(model, 1);
        var tok = model.Tokenizer!;
        var sampler = new Sampler { RepeatPenalty = 1.3f, RepeatLastN = -1 };
        using var s1 = new InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(256), half: false));
        var chat = new ChatSession(s1, tok, ChatTemplate.None);
        chat.Reply("Once upon a time", 20, sampler);
        int before = chat.Position;
        var second = chat.Reply(" The girl", 20, sampler);

        using var s2 = new InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(256), half: false));
        var reference = new Generator(s2, tok).Generate(chat.Tokens.Take(before + second.PromptTokens.Count).ToList(), 20, sampler);
        Assert.Equal(reference.Tokens, second.Tokens);
    }
}
