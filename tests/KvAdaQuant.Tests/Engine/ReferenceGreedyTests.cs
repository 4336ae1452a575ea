using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

/// <summary>Greedy generation and logits against ../shared/models/reference-greedy.json (computed independently in float64).</summary>
public class ReferenceGreedyTests
{
    [Theory]
    [InlineData("stories260K", 64)]
    [InlineData("stories3M-q80", 64)]
    public void GreedyTokensFromBosMatchReference(string name, int expectedTokens)
    {
        var reference = Fixtures.ReferenceGreedy(name);
        var expected = reference.GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).Take(expectedTokens).ToArray();
        using var model = ModelLoader.Load(name);
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(model.Config.ContextLength), half: false));
        var result = new Generator(session, model.Tokenizer!).Generate([1], expectedTokens, new Sampler());
        Assert.Equal(expected, result.Tokens.ToArray());
        Assert.Equal(reference.GetProperty("decoded_text").GetString()![..result.Text.Length], result.Text);
    }

    [Theory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public void Top5LogitsAtPositionZeroWithinOneThousandthRelative(string name)
    {
        var reference = Fixtures.ReferenceGreedy(name);
        using var model = ModelLoader.Load(name);
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(16), half: false));
        var logits = session.Prefill([1]).ToArray();
        foreach (var pair in reference.GetProperty("top5_logits_at_pos0").EnumerateArray())
        {
            int id = pair[0].GetInt32();
            double want = pair[1].GetDouble();
            Assert.True(Math.Abs(logits[id] - want) <= 1e-3 * Math.Abs(want), $"token {id}: logit {logits[id]} vs reference {want}");
        }

        var top5 = logits.Select((v, i) => (v, i)).OrderByDescending(p => p.v).Take(5).Select(p => p.i).ToArray();
        Assert.Equal(reference.GetProperty("top5_logits_at_pos0").EnumerateArray().Select(p => p[0].GetInt32()).ToArray(), top5);
    }

    [Fact]
    public void BatchedPrefillEqualsTokenByTokenDecode()
    {
        using var model = ModelLoader.Load("stories3M-q80");
        var tokens = model.Tokenizer!.Encode("Once upon a time there was a tiny robot who wanted to see the sea.", addBos: true).ToArray();
        using var transformer = new Transformer(model, 2);
        var layout = transformer.CacheLayout(64);
        using var batched = new FullPrecisionKvCache(layout, half: false);
        using var stepped = new FullPrecisionKvCache(layout, half: false);
        int vocab = model.Config.VocabSize;
        var all = new float[tokens.Length * vocab];
        transformer.Forward(tokens, 0, batched, all, allLogits: true);
        var one = new float[vocab];
        for (int t = 0; t < tokens.Length; t++)
        {
            transformer.Forward(tokens.AsSpan(t, 1), t, stepped, one, allLogits: false);
            for (int i = 0; i < vocab; i++)
            {
                Assert.True(Math.Abs(all[(t * vocab) + i] - one[i]) <= 1e-4f * (1 + Math.Abs(one[i])), $"position {t} token {i}");
            }
        }
    }

    [Fact]
    public void Fp16CacheKeepsGreedyTextOfStories260K()
    {
        var reference = Fixtures.ReferenceGreedy("stories260K");
        var expected = reference.GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create("fp16", transformer.CacheLayout(128)));
        var result = new Generator(session, model.Tokenizer!).Generate([1], 64, new Sampler());
        Assert.Equal(expected, result.Tokens.ToArray());
    }

    [Fact]
    public void GenerationStopsAtContextLimit()
    {
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(10), half: false));
        var result = new Generator(session, model.Tokenizer!).Generate([1], 100, new Sampler());
        Assert.Equal("context_full", result.StopReason);
        Assert.Equal(10, session.Position);
    }

    [Fact]
    public void SeededSamplingIsReproducible()
    {
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(64), half: false));
        var gen = new Generator(session, model.Tokenizer!);
        var a = gen.Generate("Once", 30, new Sampler(0.9f, 40, 0.95f, 7)).Tokens.ToArray();
        var b = gen.Generate("Once", 30, new Sampler(0.9f, 40, 0.95f, 7)).Tokens.ToArray();
        var c = gen.Generate("Once", 30, new Sampler(0.9f, 40, 0.95f, 8)).Tokens.ToArray();
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }
}
