using KvAdaQuant.Cli.Commands;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// Logit bias (llama.cpp's <c>--logit-bias</c>, OpenAI's <c>logit_bias</c>): added to the raw logits before the penalties,
/// -inf bans a token, a large bias forces one; <c>generate</c> takes llama.cpp's TOKEN_ID(+|-)BIAS and equals the library;
/// bad values are named before anything is printed.
/// </summary>
public class LogitBiasTests
{
    [Fact]
    public void A_ban_takes_the_next_best_and_a_large_bias_forces_a_token()
    {
        var logits = new float[] { 1f, 5f, 3f, 4f };
        Assert.Equal(1, new Sampler().Sample(logits));
        Assert.Equal(3, new Sampler { LogitBias = new Dictionary<int, float> { [1] = float.NegativeInfinity } }.Sample(logits));
        Assert.Equal(0, new Sampler { LogitBias = new Dictionary<int, float> { [0] = 10f } }.Sample(logits));
        var sampled = new Sampler(1f, 0, 1f, 3) { LogitBias = new Dictionary<int, float> { [2] = 100f } };
        Assert.All(Enumerable.Range(0, 50), _ => Assert.Equal(2, sampled.Sample(logits)));
        Assert.False(new Sampler { LogitBias = new Dictionary<int, float> { [0] = 1f } }.IsBasic); // the GPU samples it on the host
        Assert.Equal(new float[] { 1f, 5f, 3f, 4f }, logits); // the caller's logits are left alone
    }

    [Fact]
    public void The_bias_comes_before_the_penalties_as_in_llama_cpps_chain()
    {
        // Token 0 (logit 2, in the sequence, bias -1): bias first gives (2 - 1) / 2 = 0.5 and beats token 1's 0.3; penalty
        // first would give 2 / 2 - 1 = 0 and lose to it.
        var s = new Sampler { RepeatPenalty = 2f, LogitBias = new Dictionary<int, float> { [0] = -1f } };
        Assert.Equal(0, s.Sample([2f, 0.3f], [0]));
        var logits = new float[] { 2f, 1.5f, -1.9f };
        var banned = new Sampler { RepeatPenalty = 2f, LogitBias = new Dictionary<int, float> { [1] = -5f } };
        Assert.Equal(0, banned.Sample(logits, [0, 1])); // 2 / 2 = 1 against (1.5 - 5) * 2 = -7 and -1.9
    }

    [Fact]
    public void Bad_biases_are_named()
    {
        Assert.Contains("tokens are ids >= 0, biases finite numbers or -inf", Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler { LogitBias = new Dictionary<int, float> { [1] = float.NaN } }).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler { LogitBias = new Dictionary<int, float> { [1] = float.PositiveInfinity } });
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler { LogitBias = new Dictionary<int, float> { [-1] = 1f } });
        var s = new Sampler { LogitBias = new Dictionary<int, float> { [7] = 1f } };
        Assert.Equal("--logit-bias: token 7 is outside the vocabulary of 4", Assert.Throws<ArgumentException>(() => s.CheckVocabulary(4)).Message);
        Assert.Contains("token 7 is outside the vocabulary of 4", Assert.Throws<ArgumentException>(() => s.Sample(new float[4])).Message);

        Assert.Equal(new Dictionary<int, float> { [15043] = 1f, [29871] = float.NegativeInfinity, [5] = -0.25f }, SamplingOptions.ParseLogitBias(["15043+1", "29871-inf", "5-0.5", "5+0.25"]));
        Assert.Contains("'15043': expected TOKEN_ID(+|-)BIAS", Assert.Throws<ArgumentException>(() => SamplingOptions.ParseLogitBias(["15043"])).Message);
        Assert.Contains("+inf is not a bias", Assert.Throws<ArgumentException>(() => SamplingOptions.ParseLogitBias(["1+inf"])).Message);
    }

    [Fact]
    public void Generate_bans_a_token_as_the_library_does_and_refuses_bad_values_before_printing()
    {
        // stories260K greedy: "Once upon a time, there was ..."; " there" is token 383.
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "20", "--logit-bias", "383-inf", "--json");
        Assert.True(rc == 0, stderr);
        var tokens = System.Text.Json.JsonDocument.Parse(stdout).RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToList();
        Assert.DoesNotContain(383, tokens);

        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        using var session = new InferenceSession(t, KvCacheFactory.Create("fp32", t.CacheLayout(256)));
        var plain = new Generator(session, m.Tokenizer!).Generate("Once upon a time", 20, new Sampler());
        Assert.Contains(383, plain.Tokens);
        var banned = new Generator(session, m.Tokenizer!).Generate("Once upon a time", 20, new Sampler { LogitBias = new Dictionary<int, float> { [383] = float.NegativeInfinity } });
        Assert.Equal(banned.Tokens, tokens);

        foreach (var (value, message) in new[] { ("383+abc", "--logit-bias '383+abc': expected TOKEN_ID(+|-)BIAS"), ("99999+1", "--logit-bias: token 99999 is outside the vocabulary of 512") })
        {
            (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "3", "--logit-bias", value);
            Assert.Equal(1, rc);
            Assert.Equal(string.Empty, stdout);
            Assert.Contains(message, stderr);
        }
    }
}
