using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>The --kv syntax, JSON plans, their validation and exact memory accounting.</summary>
public class KvPlanTests
{
    [Fact]
    public void TextSyntaxSetsEveryOption()
    {
        var p = KvPlan.Parse("k4v2:g64:r128:sym:sink4:kpc:vg16", 3);
        Assert.Equal(3, p.Layers.Count);
        Assert.Equal(new KvSpec(KvBits.Four, 64, QuantAxis.PerChannel, true, 128, 4), p.Layers[2].K);
        Assert.Equal(new KvSpec(KvBits.Two, 16, QuantAxis.PerToken, true, 128, 4), p.Layers[2].V);
        Assert.Equal(new KvSpec(KvBits.Ternary), KvPlan.Parse("k1.58v16", 1).Layers[0].K);
        Assert.Equal(KvBits.Fp16, KvPlan.Parse("k1.58v16", 1).Layers[0].V.Bits);
        Assert.True(KvPlan.Parse("fp16", 2).IsUniformFullPrecision);

        // An unprefixed option on a mixed spec sets the quantized side only.
        Assert.Equal(KvSpec.Fp16, KvPlan.Parse("k16v2:r5:sym", 1).Layers[0].K);
        Assert.Equal(new KvSpec(KvBits.Two, Symmetric: true, Residual: 5), KvPlan.Parse("k16v2:r5:sym", 1).Layers[0].V);
        Assert.False(KvPlan.Parse("k8v8", 2).IsUniformFullPrecision);

        // A prefixed option refines one side after an unprefixed one.
        Assert.Equal(new KvSpec(KvBits.Four, 16), KvPlan.Parse("k4v2:g8:kg16", 1).Layers[0].K);
        Assert.Equal(new KvSpec(KvBits.Two, 8), KvPlan.Parse("k4v2:g8:kg16", 1).Layers[0].V);
    }

    [Theory]
    [InlineData("", null, "--kv '': empty cache spec")]
    [InlineData(" ", null, "--kv ' ': empty cache spec")]
    [InlineData(null, "", "--kv-plan: empty path")]
    public void EmptyOptionsAreErrorsNotTheDefault(string? kv, string? plan, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => KvCacheFactory.ResolvePlan(kv, plan, 2));
        Assert.Contains(message, e.Message);
        Assert.Equal("fp32", KvCacheFactory.ResolvePlan(null, null, 2).Name);
    }

    [Theory]
    [InlineData("k7v2", "K bits '7' is not one of")]
    [InlineData("k4v9", "V bits '9' is not one of")]
    [InlineData("q4", "'q4' is not a cache type")]
    [InlineData("k4v2:x", "unknown option 'x'")]
    [InlineData("k4v2:gabc", "option 'gabc': group must be a whole number")]
    [InlineData("k4v2:g64", "k.group 64 is larger than the head dimension 32")]
    [InlineData("k4v2:vg12", "v.group 12 does not divide the head dimension 32")]
    [InlineData("k16v16:g4", "option 'g4' has nothing to apply to: K and V are both unquantized (fp16, fp16)")]
    [InlineData("k32v16:sym", "option 'sym' has nothing to apply to: K and V are both unquantized (fp32, fp16)")]
    [InlineData("k16v2:kg32", "option 'kg32' sets K, which is fp16 (unquantized)")]
    [InlineData("k4v32:vr8", "option 'vr8' sets V, which is fp32 (unquantized)")]
    [InlineData("fp16:g4", "fp16 stores keys and values unquantized and takes no options ('g4')")]
    [InlineData("fp32:r8:sym", "fp32 stores keys and values unquantized and takes no options ('r8')")]
    [InlineData("k4v2:asym:sym", "options 'asym' and 'sym' both set the symmetry of K and V; give it once")]
    [InlineData("k4v2:pt:pc", "options 'pt' and 'pc' both set the axis of K and V")]
    [InlineData("k4v2:kg8:kg16", "options 'kg8' and 'kg16' both set the group of K")]
    [InlineData("k4v2:vr4:r8:vr16", "options 'vr4' and 'vr16' both set the residual of V")]
    [InlineData("k4v2:sink4:sink4", "options 'sink4' and 'sink4' both set the sinks of K and V")]
    [InlineData("", "empty cache spec")]
    public void BadTextIsRejectedNamingTheField(string text, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => KvPlan.Parse(text, 6).Validate(6, 32));
        Assert.Contains($"--kv '{text}'", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void JsonPlanRoundTrips()
    {
        var layers = new[]
        {
            new KvLayerSpec(new KvSpec(KvBits.Eight, 32, Symmetric: true), new KvSpec(KvBits.Four)),
            new KvLayerSpec(new KvSpec(KvBits.Four, 16, QuantAxis.PerChannel, false, 32, 4), new KvSpec(KvBits.Ternary, 8)),
            new KvLayerSpec(KvSpec.Fp16, new KvSpec(KvBits.Two, 0, Residual: 64)),
        };
        var plan = new KvPlan(layers, "mixed", "test");
        var again = KvPlan.FromJson(plan.ToJson(), "again");
        Assert.Equal(layers, again.Layers);
        Assert.Equal("mixed", again.Name);
    }

    [Theory]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 7}, \"v\": {\"bits\": 2}}]}", "layers[0].k.bits 7 is not one of")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"group\": 24}, \"v\": {\"bits\": 2}}]}", "layers[0].k.group 24 does not divide the head dimension 32")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"bits\": 2, \"group\": 64}}]}", "layers[0].v.group 64 is larger than the head dimension 32")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}, {\"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers has 2 entries but the model has 1 layers")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}", "malformed JSON")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"grup\": 32}, \"v\": {\"bits\": 2}}]}", "layers[0].k: unknown field 'grup'")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4}}]}", "layers[0].v is missing")]
    [InlineData("{\"layers\": [{\"k\": {\"group\": 32}, \"v\": {\"bits\": 2}}]}", "layers[0].k.bits is missing")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"residual\": -1}, \"v\": {\"bits\": 2}}]}", "layers[0].k.residual must be a whole number >= 0")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"axis\": \"row\"}, \"v\": {\"bits\": 2}}]}", "layers[0].k.axis 'row' is not")]
    [InlineData("[1, 2]", "must be a JSON object")]
    [InlineData("{\"name\": \"a\\ud800\", \"layers\": []}", "the string at $.name escapes half of a UTF-16 surrogate pair")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": \"fp16\", \"group\": 32}, \"v\": {\"bits\": 2}}]}", "layers[0].k.group applies only to quantized bits (1 to 8), but layers[0].k.bits is fp16")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"symmetric\": true, \"bits\": 32}}]}", "layers[0].v.symmetric applies only to quantized bits (1 to 8), but layers[0].v.bits is fp32")]
    [InlineData("{\"plan\": []}", "unknown field 'plan'")]
    [InlineData("{\"layers\": [{\"layer\": \"0\", \"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers[0].layer must be a whole number (the entry's index, 0), found \"0\"")]
    [InlineData("{\"layers\": [{\"layer\": null, \"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers[0].layer must be a whole number (the entry's index, 0), found null")]
    [InlineData("{\"layers\": [{\"layer\": 0.5, \"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers[0].layer must be a whole number (the entry's index, 0), found 0.5")]
    [InlineData("{\"layers\": [{\"layer\": 1, \"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers[0].layer is 1, expected 0")]
    [InlineData("{\"description\": 5, \"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "description must be a string, found 5")]
    [InlineData("{\"name\": [], \"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "name must be a string, found []")]
    [InlineData("{\"layers\": {}}", "layers must be an array, found {}")]
    [InlineData("{\"name\": \"x\"}", "layers is missing")]
    [InlineData("{\"layers\": [4]}", "layers[0] must be an object with \"k\" and \"v\", found 4")]
    [InlineData("{\"layers\": [{\"k\": 4, \"v\": {\"bits\": 2}}]}", "layers[0].k must be an object such as {\"bits\": 4}, found 4")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": null}, \"v\": {\"bits\": 2}}]}", "layers[0].k.bits must be a number or \"fp16\"/\"fp32\", found null")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4.5}, \"v\": {\"bits\": 2}}]}", "layers[0].k.bits 4.5 is not one of")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"group\": \"32\"}, \"v\": {\"bits\": 2}}]}", "layers[0].k.group must be a whole number >= 0, found \"32\"")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"sinks\": 1.5}, \"v\": {\"bits\": 2}}]}", "layers[0].k.sinks must be a whole number >= 0, found 1.5")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"symmetric\": \"yes\"}, \"v\": {\"bits\": 2}}]}", "layers[0].k.symmetric must be true or false, found \"yes\"")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"axis\": 1}, \"v\": {\"bits\": 2}}]}", "layers[0].k.axis must be \"token\" or \"channel\", found 1")]
    public void BadJsonPlansAreRejectedNamingTheField(string json, string message)
    {
        using var dir = new TempDir();
        var path = dir.File("plan.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<ArgumentException>(() => KvPlan.Load(path).Validate(1, 32));
        Assert.Contains($"--kv-plan {path}", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void IntegralJsonNumbersAreTheirIntegerHoweverWritten()
    {
        var plan = KvPlan.FromJson(
            """{"layers": [{"layer": 0.0, "k": {"bits": 4.0, "group": 32.0, "residual": 1e1}, "v": {"bits": 2e0, "sinks": 4.00}}]}""", "test");
        Assert.Equal(new KvSpec(KvBits.Four, 32, Residual: 10), plan.Layers[0].K);
        Assert.Equal(new KvSpec(KvBits.Two, Sinks: 4), plan.Layers[0].V);
        Assert.Equal(KvBits.Ternary, KvPlan.FromJson("""{"layers": [{"k": {"bits": 1.58}, "v": {"bits": 16.0}}]}""", "test").Layers[0].K.Bits);
    }

    [Fact]
    public void Stories3MAtK4V2Takes384BytesPerTokenAgainst1536ForFp16()
    {
        // 6 layers, 2 KV heads, head dim 32; K: 16 code bytes + FP16 scale and zero = 20, V: 8 + 4 = 12, per head per token.
        var plan = KvPlan.Parse("k4v2:g32:pt:asym", 6);
        Assert.Equal(384, plan.BytesPerToken(2, 32));
        Assert.Equal(384L * 512, plan.BytesAt(2, 32, 512));
        Assert.Equal(1536, KvPlan.Parse("fp16", 6).BytesPerToken(2, 32));
        Assert.Equal(4.0, plan.AverageBits(2, 32, 512));
    }

    [Fact]
    public void ResidualSinksAndPerChannelBytesFollowTheFormula()
    {
        // k4v2 r64 sink4 at 512 tokens: 4 sinks + 64 residual in FP16 (64 bytes per head), 444 quantized.
        // per head: K 68*64 + 444*20 = 13232, V 68*64 + 444*12 = 9680; x 2 heads x 6 layers.
        Assert.Equal(6 * 2 * (13232 + 9680), KvPlan.Parse("k4v2:r64:sink4", 6).BytesAt(2, 32, 512));

        // per-channel K, 16-token chunks, residual 8: at 100 tokens 80 are quantized (5 chunks), 20 stay FP16.
        // K per head: 20*64 + 80*16 + 5 chunks * 32 channels * 4 = 1280 + 1280 + 640; V per-token 4-bit: 100 * 20.
        var pc = KvPlan.Parse("k4v4:kpc:kg16:kr8", 1);
        Assert.Equal(80, pc.Layers[0].K.QuantizedTokens(100));
        Assert.Equal(3200 + 2000, pc.BytesAt(1, 32, 100));
        Assert.Equal(16 + 8 + 20, pc.BytesPerToken(1, 32));
    }

    [Theory]
    [InlineData("k4v2:r64:sink4")]
    [InlineData("k3v5:kpc:kg16:kr8:vsym")]
    [InlineData("k1.58v8:pc:g8:sink3")]
    [InlineData("k16v2:r5")]
    public void CacheStateMatchesTheAccounting(string text)
    {
        var plan = KvPlan.Parse(text, 2);
        var layout = new KvLayout(2, 2, 32, 200);
        using var cache = new QuantizedKvCache(plan, layout);
        var rng = new Random(3);
        int length = 0;
        foreach (int n in new[] { 1, 5, 64, 1, 1, 30, 77 })
        {
            var k = Enumerable.Range(0, n * layout.KvDim).Select(_ => (float)rng.NextDouble()).ToArray();
            foreach (var layer in cache.Layers)
            {
                layer.Append(k, k, n);
            }

            length += n;
            var store = (QuantizedKvStore)cache.Layers[1];
            Assert.Equal(plan.Layers[1].K.QuantizedTokens(length), store.QuantizedCounts.Keys);
            Assert.Equal(plan.Layers[1].V.QuantizedTokens(length), store.QuantizedCounts.Values);
            Assert.Equal(plan.BytesAt(2, 32, length), ((IKvCache)cache).ByteCount);
        }
    }
}
