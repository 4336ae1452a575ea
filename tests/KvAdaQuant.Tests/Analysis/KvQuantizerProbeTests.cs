using KvAdaQuant.Analysis;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Analysis;

/// <summary>The probe over the Quantization layer: its caches quantize only what they are told to.</summary>
public class KvQuantizerProbeTests
{
    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public void OnlyTheChosenTensorIsQuantizedInTheCache(bool keys, bool rotate)
    {
        using var model = ModelLoader.Load("stories3M-q80");
        var c = model.Config;
        var tokens = model.Tokenizer!.Encode("One day a little bird flew over the big green hill and sang a happy song.", addBos: true).ToArray();
        var transformer = new Transformer(model, 2);
        var probe = new KvQuantizerProbe(new KvSpec(KvBits.Four, 32) { Rotate = rotate }); // rotated: the cache and RoundTrip rotate alike
        Assert.Equal(rotate, probe.Describe(KvBits.Three).EndsWith(":rot", StringComparison.Ordinal));
        var capture = new ForwardCapture(c, tokens.Length);
        using var session = new InferenceSession(transformer, probe.CreateCache(transformer.CacheLayout(tokens.Length), keys ? KvBits.Three : null, keys ? null : KvBits.Three));
        session.Prefill(tokens, capture);
        var stored = new float[tokens.Length * c.HeadDim];
        var expected = new float[stored.Length];
        for (int l = 0; l < c.Layers; l++)
        {
            for (int g = 0; g < c.KvHeads; g++)
            {
                var k = capture.Head(l, KvTensorKind.Keys, g);
                var v = capture.Head(l, KvTensorKind.Values, g);
                session.Cache.Layers[l].ReadKeys(g, 0, tokens.Length, stored);
                if (keys)
                {
                    KvQuantizer.RoundTrip(k, tokens.Length, c.HeadDim, probe.Spec(KvBits.Three), expected);
                    Assert.Equal(expected, stored);
                    Assert.NotEqual(k, stored);
                }
                else
                {
                    Assert.Equal(k, stored);
                }

                session.Cache.Layers[l].ReadValues(g, 0, tokens.Length, stored);
                if (keys)
                {
                    Assert.Equal(v, stored);
                }
                else
                {
                    KvQuantizer.RoundTrip(v, tokens.Length, c.HeadDim, probe.Spec(KvBits.Three), expected);
                    Assert.Equal(expected, stored);
                    Assert.NotEqual(v, stored);
                }
            }
        }
    }

    [Fact]
    public void A_rotation_the_head_cannot_take_is_named_by_the_option_that_asked_for_it()
    {
        var e = Assert.Throws<ArgumentException>(() => new KvQuantizerProbe(new KvSpec(KvBits.Four, 16) { Rotate = true }).Validate(48));
        Assert.Equal("--rotate: rot needs a head dimension that is a power of two (the Walsh-Hadamard rotation), the model has 48", e.Message);
        e = Assert.Throws<ArgumentException>(() => new KvQuantizerProbe(new KvSpec(KvBits.Four, 40)).Validate(48));
        Assert.StartsWith("--group/--axis: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RealQuantizerErrorsFallWithBitsOnStories260K()
    {
        using var model = ModelLoader.Load("stories260K");
        int[] tokens = [1, .. model.Tokenizer!.Encode(File.ReadAllText(Fixtures.Path("data", "ptb", "ptb.valid.txt"))[..1500], addBos: false).Take(79)];
        var probe = new KvQuantizerProbe(new KvSpec(KvBits.Four, 8));
        var a = new KvAnalyzer(new Transformer(model, 2)).Run(tokens, "ptb", [KvBits.Two, KvBits.Four, KvBits.Eight], probe);
        foreach (var l in a.Layers)
        {
            var e = l.Quantization.OrderBy(q => q.Bits).ToArray();
            Assert.True(e[0].K > e[1].K && e[1].K > e[2].K, $"layer {l.Layer}: K errors {e[0].K}, {e[1].K}, {e[2].K} not falling");
            Assert.True(e[0].V > e[1].V && e[1].V > e[2].V, $"layer {l.Layer}: V errors not falling");

            // Round to nearest on 2^b - 1 steps of the group range: error at most half a step per element.
            Assert.True(e[2].K < 0.5 * 2 / 255.0 * 8, $"layer {l.Layer}: 8-bit K error {e[2].K}");
        }

        Assert.Equal("4:g8:pt:asym:r0:sink0", a.Schemes[1]);
        Assert.True(a["k", 8]!.KlMean < a["k", 2]!.KlMean);
        Assert.True(a["v", 8]!.KlMean < a["v", 2]!.KlMean);
    }

    [Fact]
    public void SpecThatDoesNotFitTheHeadIsRefusedNamingTheOption()
    {
        var e = Assert.Throws<ArgumentException>(() => new KvQuantizerProbe(new KvSpec(KvBits.Four, 12)).Validate(32));
        Assert.Contains("--group", e.Message);
        Assert.Contains("12", e.Message);
    }

    [Fact]
    public void ANegativePerTokenGroupIsRefusedAsNegativeNotAsTooLarge()
    {
        // It was "group -1 is larger than the head dimension 32".
        var e = Assert.Throws<ArgumentException>(() => new KvQuantizerProbe(new KvSpec(KvBits.Four, -1)).Validate(32));
        Assert.EndsWith("group must be >= 0 channels (0: the whole head), got -1", e.Message);
        Assert.Equal("k.group must be >= 0 channels (0: the whole head), got -1", new KvSpec(KvBits.Four, -1).Problem(32, "k."));
    }

    [Fact]
    public void LibraryCacheAndEmulatedCacheGiveTheSamePropagation()
    {
        using var model = ModelLoader.Load("stories3M-q80");
        int[] tokens = [1, .. model.Tokenizer!.Encode(File.ReadAllText(Fixtures.Path("data", "ptb", "ptb.valid.txt"))[..1500], addBos: false).Take(63)];
        var analyzer = new KvAnalyzer(new Transformer(model, 2));
        var spec = new KvSpec(KvBits.Four, 32);
        var library = analyzer.Run(tokens, "ptb", [KvBits.Three], new KvQuantizerProbe(spec));
        var emulated = analyzer.Run(tokens, "ptb", [KvBits.Three], new KvQuantizerProbe(spec) { EmulatedCache = true });
        foreach (var kind in new[] { "k", "v" })
        {
            var a = library[kind, 3]!;
            var b = emulated[kind, 3]!;
            Assert.Null(a.Failure);
            for (int l = 0; l < a.ResidualError.Length; l++)
            {
                Assert.True(Math.Abs(a.ResidualError[l] - b.ResidualError[l]) <= 1e-3 * b.ResidualError[l], $"{kind} layer {l}: {a.ResidualError[l]} vs {b.ResidualError[l]}");
            }

            Assert.True(Math.Abs(a.KlMean - b.KlMean) <= 1e-2 * b.KlMean, $"{kind}: KL {a.KlMean} vs {b.KlMean}");
        }
    }

    [Fact]
    public void ARunTheCacheRefusesIsRecordedAsFailedAndTheRestGoesOn()
    {
        using var model = ModelLoader.Load("stories260K");
        var a = new KvAnalyzer(new Transformer(model, 2)).Run([1, 300, 301, 302, 303, 304, 305, 306], "x", [KvBits.Two], new RowAffineProbe { RefuseKeys = true });
        Assert.Equal("test: refusing keys", a["k", 2]!.Failure);
        Assert.True(double.IsNaN(a["k", 2]!.KlMean));
        Assert.Null(a["v", 2]!.Failure);
        Assert.True(a["v", 2]!.KlMean > 0);
        using var dir = new TempDir();
        var plots = new AnalysisPlotter().Write(a, dir.Path);
        var html = AnalysisReport.Render(a, plots);
        Assert.Contains("only K at 2 bits failed:", html);
        Assert.Contains("\"failure\": \"test: refusing keys\"", AnalysisWriter.ToJson(a));
    }
}
