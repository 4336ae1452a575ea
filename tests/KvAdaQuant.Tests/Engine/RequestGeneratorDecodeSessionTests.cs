using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// <see cref="RequestGenerator"/> over the <see cref="IDecodeSession"/> interface (what <c>kvaq serve --device cuda</c>
/// runs through): a session that is not an <see cref="InferenceSession"/> gives exactly the results of the
/// <see cref="InferenceSession"/> constructor, prompt reuse (the whole cache, a cut-back prefix, none) and cancellation
/// included, and a session that cannot cut back starts over.
/// </summary>
public class RequestGeneratorDecodeSessionTests
{
    private const string First = "Once upon a time, there was a little dog named Max.";
    private const string Shares = "Once upon a time, there was a little cat named Tom.";
    private const string Other = "One day a bird sang.";

    [Theory]
    [InlineData("stories260K", "fp32")]
    [InlineData("stories3M-q80", "k4v2")]
    [InlineData("stories3M-q80", "k4v2:r64")]
    public void Through_the_interface_requests_give_exactly_the_results_of_the_InferenceSession_constructor(string model, string kv)
    {
        using var m = ModelLoader.Load(model);
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var cpu = ForwardingDecodeSession.NewSession(transformer, kv, 256);
        using var inner = ForwardingDecodeSession.NewSession(transformer, kv, 256);
        var fake = new ForwardingDecodeSession(inner);
        var direct = new RequestGenerator(cpu, tok);
        var through = new RequestGenerator(fake, tok);

        var first = tok.Encode(First, addBos: true);
        var held = direct.Generate(first, 12, new Sampler(), null, reusePrefix: true);
        var extends = first.Concat(held.Tokens.Take(11)).Concat(tok.Encode(" The dog was happy.", addBos: false)).ToList();

        // A first request, one extending the cache, one sharing only a prefix (cut back where exact), one sharing BOS,
        // the same without cache_prompt, and a sampled one with penalties after it.
        var requests = new (List<int> Prompt, bool Reuse, Func<Sampler> Sampler)[]
        {
            (first, true, () => new Sampler()),
            (extends, true, () => new Sampler()),
            (tok.Encode(Shares, addBos: true), true, () => new Sampler()),
            (tok.Encode(Other, addBos: true), true, () => new Sampler()),
            (extends, false, () => new Sampler()),
            (first, true, () => new Sampler(0.8f, 40, 0.95f, 7) { RepeatPenalty = 1.2f, FrequencyPenalty = 0.1f }),
        };
        direct = new RequestGenerator(cpu, tok);
        var reused = new List<int>();
        foreach (var (prompt, reuse, sampler) in requests)
        {
            var a = direct.Generate(prompt, 12, sampler(), null, reusePrefix: reuse);
            var b = through.Generate(prompt, 12, sampler(), null, reusePrefix: reuse);
            Assert.Equal(a.PromptTokens, b.PromptTokens);
            Assert.Equal(a.Tokens, b.Tokens);
            Assert.Equal(a.Text, b.Text);
            Assert.Equal(a.StopReason, b.StopReason);
            Assert.Equal(a.KvBytes, b.KvBytes);
            Assert.Equal(direct.ReusedTokens, through.ReusedTokens);
            Assert.Equal(direct.Tokens, through.Tokens);
            Assert.Equal(through.Tokens.Count, fake.Position);
            reused.Add(through.ReusedTokens);
        }

        // The second request ran only its new tokens; the third, fourth and last kept the common prefix, the cache cut back
        // exactly (FP32; K4V2, each position quantized alone; K4V2 while the positions after the cut are in its 64-row window).
        Assert.Equal(first.Count + 11, reused[1]);
        int common = extends.Zip(tok.Encode(Shares, addBos: true)).TakeWhile(p => p.First == p.Second).Count();
        Assert.Equal(common, reused[2]);
        Assert.Equal(1, reused[3]);
        Assert.Equal(0, reused[4]);
        Assert.Equal(first.Count - 1, reused[5]); // a prefix of what the cache holds: all but its last token
        Assert.Equal(3, fake.Truncations);
    }

    [Fact]
    public void A_session_that_cannot_cut_back_starts_over_and_answers_the_same()
    {
        using var m = ModelLoader.Load("stories260K");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var cpu = ForwardingDecodeSession.NewSession(transformer, "fp32", 256);
        using var inner = ForwardingDecodeSession.NewSession(transformer, "fp32", 256);
        var fake = new ForwardingDecodeSession(inner) { RefuseTruncate = true };
        var direct = new RequestGenerator(cpu, tok);
        var through = new RequestGenerator(fake, tok);
        foreach (string text in new[] { First, Shares })
        {
            var prompt = tok.Encode(text, addBos: true);
            var a = direct.Generate(prompt, 10, new Sampler(), null, reusePrefix: true);
            var b = through.Generate(prompt, 10, new Sampler(), null, reusePrefix: true);
            Assert.Equal(a.Tokens, b.Tokens);
            Assert.Equal(0, through.ReusedTokens);
        }

        Assert.True(direct.ReusedTokens > 1, $"the CPU cache kept {direct.ReusedTokens} tokens");
        Assert.Equal(0, fake.Truncations);
        Assert.Equal(0, through.ReusablePrefix(tok.Encode(Shares + " More.", addBos: true).Take(5).ToList()));
    }

    [Fact]
    public void Through_the_interface_a_cancelled_request_stops_as_on_the_cpu_and_the_next_one_extends_it()
    {
        using var m = ModelLoader.Load("stories260K");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var cpu = ForwardingDecodeSession.NewSession(transformer, "fp32", 256);
        using var inner = ForwardingDecodeSession.NewSession(transformer, "fp32", 256);
        var direct = new RequestGenerator(cpu, tok);
        var through = new RequestGenerator(new ForwardingDecodeSession(inner), tok);
        var prompt = tok.Encode("Once upon a time", addBos: true);
        var results = new List<GenerationResult>();
        foreach (var generator in new[] { direct, through })
        {
            using var cts = new CancellationTokenSource();
            int pieces = 0;
            results.Add(generator.Generate(prompt, 40, new Sampler(), _ =>
            {
                if (++pieces == 5)
                {
                    cts.Cancel();
                }
            }, cancel: cts.Token, reusePrefix: true));
        }

        Assert.Equal("cancelled", results[1].StopReason);
        Assert.Equal(results[0].StopReason, results[1].StopReason);
        Assert.Equal(results[0].Tokens, results[1].Tokens);
        Assert.Equal(5, results[1].Tokens.Count);
        Assert.Equal(direct.Tokens, through.Tokens);

        // The next request continues after what the cancelled one fed.
        var next = through.Tokens.Concat(tok.Encode(" The dog", addBos: false)).ToList();
        var a = direct.Generate(next, 10, new Sampler(), null, reusePrefix: true);
        var b = through.Generate(next, 10, new Sampler(), null, reusePrefix: true);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(prompt.Count + 4, through.ReusedTokens);
        Assert.Equal(direct.ReusedTokens, through.ReusedTokens);
    }

    [Fact]
    public void A_prompt_longer_than_the_sessions_capacity_is_refused_before_anything_runs()
    {
        using var m = ModelLoader.Load("stories260K");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var inner = ForwardingDecodeSession.NewSession(transformer, "fp32", 16);
        var fake = new ForwardingDecodeSession(inner);
        var through = new RequestGenerator(fake, tok);
        var e = Assert.Throws<ArgumentException>(() => through.Generate(Enumerable.Repeat(1, 17).ToList(), 4, new Sampler(), null));
        Assert.Equal("the prompt has 17 tokens but the context holds 16", e.Message);
        Assert.Equal(0, fake.Position);
        Assert.Equal(0, fake.Prefills);
    }
}
