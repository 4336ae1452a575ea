using CsCheck;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// Log-probabilities: <see cref="TokenLogprobs"/> against a direct float64 log-softmax, and what <see cref="Generator"/>
/// and <see cref="RequestGenerator"/> record (<see cref="LogprobOptions"/>) against the logits of an independent replay of
/// the same tokens, one position at a time.
/// </summary>
public class TokenLogprobsTests
{
    // ln softmax in float64, written out: the reference.
    private static double[] LogSoftmax(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (float x in logits)
        {
            max = Math.Max(max, x);
        }

        double sum = 0;
        foreach (float x in logits)
        {
            sum += Math.Exp(x - max);
        }

        var r = new double[logits.Length];
        for (int i = 0; i < r.Length; i++)
        {
            r[i] = logits[i] - max - Math.Log(sum);
        }

        return r;
    }

    [Fact]
    public void Logprobs_equal_a_float64_log_softmax_and_the_top_tokens_are_the_largest_in_order()
    {
        Gen.Float[-30f, 30f].Array[1, 300].Select(Gen.Int[0, 25]).Sample(
            t =>
            {
                var (logits, top) = t;
                var reference = LogSoftmax(logits);
                for (int token = 0; token < logits.Length; token += Math.Max(1, logits.Length / 7))
                {
                    var e = TokenLogprobs.Of(logits, token, top);
                    Assert.Equal(token, e.Token);
                    Assert.True(Math.Abs(e.Logprob - reference[token]) <= 1e-4 * Math.Max(1, Math.Abs(reference[token])), $"token {token}: {e.Logprob} vs {reference[token]}");
                    Assert.Equal(Math.Min(top, logits.Length), e.Top.Count);
                    var expected = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).Take(top).ToArray();
                    Assert.Equal(expected, e.Top.Select(x => x.Token).ToArray());
                    foreach (var x in e.Top)
                    {
                        Assert.True(Math.Abs(x.Logprob - reference[x.Token]) <= 1e-4 * Math.Max(1, Math.Abs(reference[x.Token])));
                    }
                }

                Assert.True(Math.Abs(reference.Sum(Math.Exp) - 1) < 1e-9);
            },
            iter: 200);
    }

    [Fact]
    public void Ties_list_the_lower_id_first_and_equal_logits_share_ln_one_over_n()
    {
        var logits = new float[] { 1f, 3f, 3f, 0f, 3f };
        var e = TokenLogprobs.Of(logits, 4, 4);
        Assert.Equal(new[] { 1, 2, 4, 0 }, e.Top.Select(x => x.Token).ToArray());
        Assert.Equal(e.Top[0].Logprob, e.Top[1].Logprob);
        Assert.Equal(e.Logprob, e.Top[2].Logprob);
        var flat = TokenLogprobs.Of(new float[8], 5, 2);
        Assert.Equal(-Math.Log(8), flat.Logprob, 6);
        Assert.Equal(new[] { 0, 1 }, flat.Top.Select(x => x.Token).ToArray());
    }

    [Fact]
    public void Bad_arguments_are_named()
    {
        var logits = new float[] { 0f, 1f };
        Assert.Contains("token 2 is outside the vocabulary of 2", Assert.Throws<ArgumentOutOfRangeException>(() => TokenLogprobs.Of(logits, 2, 1)).Message);
        Assert.Contains("top must be >= 0, got -1", Assert.Throws<ArgumentOutOfRangeException>(() => TokenLogprobs.Of(logits, 0, -1)).Message);
        Assert.Contains("not finite", Assert.Throws<ArgumentException>(() => TokenLogprobs.Of(new[] { 0f, float.NaN }, 0, 1)).Message);
        Assert.Contains("no logits", Assert.Throws<ArgumentException>(() => TokenLogprobs.Of([], 0, 1)).Message);
    }

    [Theory]
    [InlineData("stories260K", "fp32")]
    [InlineData("stories3M-q80", "k4v2")]
    public void Generated_and_prompt_logprobs_equal_those_of_an_independent_replay(string model, string kv)
    {
        using var m = ModelLoader.Load(model);
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var session = ForwardingDecodeSession.NewSession(transformer, kv, 256);
        var prompt = tok.Encode("Once upon a time, there was a little dog named Max. He liked to run in the park.", addBos: true);
        var streamed = new List<TokenLogprob>();
        var options = new LogprobOptions(5) { Prompt = true, OnToken = streamed.Add };
        var sampler = new Sampler(0.9f, 40, 0.95f, 11);
        var result = new Generator(session, tok).Generate(prompt, 0, 24, sampler, logprobs: options);
        var plain = new Generator(session, tok).Generate(prompt, 0, 24, new Sampler(0.9f, 40, 0.95f, 11));
        Assert.Equal(plain.Tokens, result.Tokens); // recording changes nothing that is generated

        // The replay: a fresh session, one position at a time.
        using var replay = ForwardingDecodeSession.NewSession(transformer, kv, 256);
        var sequence = prompt.Concat(result.Tokens).ToList();
        Assert.Equal(prompt.Count - 1, result.PromptLogprobs!.Count);
        Assert.Equal(result.Tokens.Count, result.Logprobs!.Count);
        Assert.Equal(result.Logprobs, streamed.Take(result.Tokens.Count)); // OnToken saw each entry as it was sampled
        for (int i = 0; i + 1 < sequence.Count; i++)
        {
            var logits = replay.Decode(sequence[i]);
            var expected = LogSoftmax(logits);
            var entry = i + 1 < prompt.Count ? result.PromptLogprobs[i] : result.Logprobs[i + 1 - prompt.Count];
            Assert.Equal(sequence[i + 1], entry.Token);
            Assert.True(Math.Abs(entry.Logprob - expected[entry.Token]) < 2e-3, $"position {i}: {entry.Logprob} vs {expected[entry.Token]}");
            Assert.Equal(5, entry.Top.Count);
            for (int j = 0; j < 5; j++)
            {
                Assert.True(Math.Abs(entry.Top[j].Logprob - expected[entry.Top[j].Token]) < 2e-3);
                Assert.True(j == 0 || entry.Top[j].Logprob <= entry.Top[j - 1].Logprob);
            }

            Assert.True(entry.Logprob <= entry.Top[0].Logprob);
        }
    }

    [Fact]
    public void Greedy_tokens_are_each_positions_most_likely_and_the_interface_default_prefill_agrees_with_the_batched_one()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var cpu = ForwardingDecodeSession.NewSession(transformer, "fp16", 256);
        using var inner = ForwardingDecodeSession.NewSession(transformer, "fp16", 256);
        var through = new ForwardingDecodeSession(inner); // the interface's position-by-position prefill
        var prompt = tok.Encode("The little girl saw a big red ball in the garden and she wanted to play with it.", addBos: true);
        var options = new LogprobOptions(3) { Prompt = true };
        var a = new RequestGenerator(cpu, tok).Generate(prompt, 16, new Sampler(), null, logprobs: options);
        var b = new RequestGenerator(through, tok).Generate(prompt, 16, new Sampler(), null, logprobs: options);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(0, through.Prefills); // ran through Decode, position by position
        foreach (var (x, y) in a.PromptLogprobs!.Concat(a.Logprobs!).Zip(b.PromptLogprobs!.Concat(b.Logprobs!)))
        {
            Assert.Equal(x.Token, y.Token);
            Assert.True(Math.Abs(x.Logprob - y.Logprob) < 1e-3, $"{x.Logprob} vs {y.Logprob}");
            Assert.Equal(x.Top.Select(t => t.Token), y.Top.Select(t => t.Token));
        }

        foreach (var e in a.Logprobs!)
        {
            Assert.Equal(e.Top[0].Token, e.Token); // greedy: the most likely token, always
            Assert.Equal(e.Top[0].Logprob, e.Logprob);
        }
    }

    [Fact]
    public void Prompt_logprobs_refuse_a_prompt_taken_from_a_cache_and_run_the_whole_prompt_in_a_server()
    {
        using var m = ModelLoader.Load("stories260K");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var session = ForwardingDecodeSession.NewSession(transformer, "fp32", 128);
        var prompt = tok.Encode("Once upon a time", addBos: true);
        session.Prefill(prompt.ToArray());
        var e = Assert.Throws<ArgumentException>(() => new Generator(session, tok).Generate(prompt, prompt.Count, 4, new Sampler(), logprobs: new LogprobOptions(1) { Prompt = true }));
        Assert.Contains($"{prompt.Count} of its tokens came from a saved cache", e.Message);

        var server = new RequestGenerator(session, tok);
        server.Generate(prompt, 4, new Sampler(), null, reusePrefix: true);
        var again = server.Generate(prompt.Concat(tok.Encode(" there", addBos: false)).ToList(), 4, new Sampler(), null, reusePrefix: true, logprobs: new LogprobOptions(0) { Prompt = true });
        Assert.Equal(0, server.ReusedTokens);
        Assert.Equal(again.PromptTokens.Count - 1, again.PromptLogprobs!.Count);
        Assert.All(again.PromptLogprobs, x => Assert.Empty(x.Top));
    }
}
