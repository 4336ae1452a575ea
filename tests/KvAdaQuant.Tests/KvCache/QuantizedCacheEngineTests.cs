using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>The quantized cache inside the real engine.</summary>
public class QuantizedCacheEngineTests
{
    [Fact]
    public void Fp32ThroughTheQuantizedStoreEqualsTheUnquantizedCacheTokenForToken()
    {
        using var model = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(model, 2);
        var layout = transformer.CacheLayout(80);
        using var plain = new InferenceSession(transformer, new FullPrecisionKvCache(layout, half: false));
        var expected = new Generator(plain, model.Tokenizer!).Generate("Once upon a time", 64, new Sampler());

        using var viaFactory = new InferenceSession(transformer, KvCacheFactory.Create("fp32", layout));
        Assert.Equal(expected.Tokens, new Generator(viaFactory, model.Tokenizer!).Generate("Once upon a time", 64, new Sampler()).Tokens);

        // the per-layer store with FP32 K and V sides (a mixed-plan code path) gives the same tokens
        using var viaStore = new InferenceSession(transformer, new QuantizedKvCache(KvPlan.Parse("k32v32", model.Config.Layers), layout));
        Assert.Equal(expected.Tokens, new Generator(viaStore, model.Tokenizer!).Generate("Once upon a time", 64, new Sampler()).Tokens);
    }

    [Fact]
    public void K8V8KeepsStories260KGreedyTextFor64Tokens()
    {
        var reference = Fixtures.ReferenceGreedy("stories260K");
        var expected = reference.GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).Take(64).ToArray();
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create("k8v8", transformer.CacheLayout(128)));
        Assert.IsType<QuantizedKvCache>(session.Cache);
        var result = new Generator(session, model.Tokenizer!).Generate([1], 64, new Sampler());
        Assert.Equal(expected, result.Tokens.ToArray());
    }

    [Fact]
    public void TwoBitCacheChangesTheText()
    {
        // guards the tests above against a cache that silently ignores its plan
        using var model = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(model, 2);
        var layout = transformer.CacheLayout(80);
        using var plain = new InferenceSession(transformer, new FullPrecisionKvCache(layout, half: false));
        using var k2 = new InferenceSession(transformer, KvCacheFactory.Create("k2v2:g32", layout));
        var a = new Generator(plain, model.Tokenizer!).Generate([1], 40, new Sampler()).Tokens;
        var b = new Generator(k2, model.Tokenizer!).Generate([1], 40, new Sampler()).Tokens;
        Assert.NotEqual(a, b);
        Assert.Equal(k2.Position * 6L * 2 * (8 + 4 + 8 + 4), k2.Cache.ByteCount);
        Assert.Equal(40, k2.Position);
    }
}
