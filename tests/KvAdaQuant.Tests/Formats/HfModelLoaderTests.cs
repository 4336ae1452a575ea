using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Safetensors;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Tests.Formats;

/// <summary>stories260K rewritten as a Hugging Face folder (half-split RoPE) must compute what the llama2.c original does.</summary>
public class HfModelLoaderTests
{
    private static int[] Greedy(LlamaModel model, int n) => Fp32Decode.GreedyFromBos(model, n);

    private static float[] LogitsAtZero(LlamaModel model) => Fp32Decode.LogitsAtBos(model);

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Stories260KAsHfFolderGreedyEqualsReference(int shards)
    {
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path, "F32", shards);
        using var model = ModelLoader.Load(dir.Path, Fixtures.Stories260KTokenizer);
        Assert.Equal("safetensors", model.Format);
        Assert.Equal(RopeLayout.HalfSplit, model.Config.RopeLayout);
        Assert.True(model.Config.TiedEmbeddings);
        Assert.Equal(4, model.Config.KvHeads);
        var reference = Fixtures.ReferenceGreedy("stories260K");
        var expected = reference.GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(64, expected.Length);
        Assert.Equal(expected, Greedy(model, 64));
    }

    [Fact]
    public void RopeLayoutMattersSoTheGreedyTestCanFail()
    {
        // Guard that the test above is sensitive to the RoPE layout: the same folder read with interleaved RoPE differs.
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path);
        using var model = ModelLoader.Load(dir.Path);
        var hf = LogitsAtZero(model);
        using var original = ModelLoader.Load(Fixtures.Stories260K);
        var reference = LogitsAtZero(original);
        Assert.True(hf.Zip(reference).All(p => Math.Abs(p.First - p.Second) <= 1e-4f), "position 0 logits agree (RoPE is identity at position 0)");
        var swapped = new LlamaModel(model.Path, model.Format, model.Config with { RopeLayout = RopeLayout.Interleaved }, model.Weights, null);
        Assert.NotEqual(Greedy(original, 24), Greedy(swapped, 24));
    }

    [Theory]
    [InlineData("F16", 2e-2)]
    [InlineData("BF16", 1e-1)]
    public void HalfPrecisionWeightsStayCloseToF32(string dtype, double tolerance)
    {
        using var f32Dir = new TempDir();
        using var halfDir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, f32Dir.Path);
        HfFolderWriter.Write(Fixtures.Stories260K, halfDir.Path, dtype);
        using var a = ModelLoader.Load(f32Dir.Path);
        using var b = ModelLoader.Load(halfDir.Path);
        Assert.Equal(dtype, b.Weights.Layers[0].Wq.Type.ToString());
        var la = LogitsAtZero(a);
        var lb = LogitsAtZero(b);
        double maxDiff = la.Zip(lb).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(maxDiff > 0, "half precision should change something");
        Assert.True(maxDiff < tolerance, $"max logit difference {maxDiff} >= {tolerance}");
        Assert.Equal(Array.IndexOf(la, la.Max()), Array.IndexOf(lb, lb.Max()));
    }

    [Fact]
    public void ConfigFieldsAreRead()
    {
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path, editConfig: c =>
        {
            c["rope_theta"] = 500000.0;
            c["rms_norm_eps"] = 1e-6;
            c["head_dim"] = 8;
            c["eos_token_id"] = new[] { 2, 7 };
            c["rope_scaling"] = new Dictionary<string, object> { ["rope_type"] = "llama3", ["factor"] = 32.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 8192 };
        });
        using var model = ModelLoader.Load(dir.Path);
        var c = model.Config;
        Assert.Equal(500000f, c.RopeTheta);
        Assert.Equal(1e-6f, c.NormEps);
        Assert.Equal(8, c.HeadDim);
        Assert.Equal(2, c.EosToken);
        Assert.Equal(new RopeScaling(32, 1, 4, 8192), c.RopeScaling);
    }

    [Fact]
    public void MissingTieFlagTiesWhenThereIsNoLmHead()
    {
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path, writeConfigTie: false);
        using var model = ModelLoader.Load(dir.Path);
        Assert.Same(model.Weights.TokenEmbedding, model.Weights.Output);
    }

    [Fact]
    public void SeparateLmHeadIsLoadedAndComputesTheSameFunction()
    {
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path, untieOutput: true);
        using var model = ModelLoader.Load(dir.Path);
        Assert.False(model.Config.TiedEmbeddings);
        Assert.NotSame(model.Weights.TokenEmbedding, model.Weights.Output);
        Assert.Equal("lm_head.weight", model.Weights.Output.Name);
        var expected = Fixtures.ReferenceGreedy("stories260K").GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).Take(32).ToArray();
        Assert.Equal(expected, Greedy(model, 32));
    }

    [Fact]
    public void QkvBiasesAreMappedToTheirLayers()
    {
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path, qkvBias: true);
        using var model = ModelLoader.Load(dir.Path);
        var l3 = model.Weights.Layers[3];
        Assert.Equal(Enumerable.Range(0, 64).Select(k => (3 * 0.1f) + (k * 0.01f)), l3.Bq!);
        Assert.Equal(Enumerable.Range(0, 32).Select(k => -k * 0.02f), l3.Bk!);
        Assert.Equal(Enumerable.Range(0, 32).Select(k => k * 0.005f), l3.Bv!);

        // The biases take part in the forward pass: logits move.
        using var plain = ModelLoader.Load(Fixtures.Stories260K);
        Assert.NotEqual(LogitsAtZero(plain), LogitsAtZero(model));
    }
}
