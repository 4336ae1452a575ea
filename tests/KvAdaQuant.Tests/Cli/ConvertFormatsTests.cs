using KvAdaQuant.Cli;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Formats.Safetensors;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;
using KvAdaQuant.Tests.Formats;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>kvaq convert</c> between llama2.c, GGUF and Hugging Face folders, end to end through the command line: round trips
/// on the real models keep the float64 reference's greedy tokens at every stage and F32 weights to the bit, GGUF
/// re-quantization equals direct quantization byte for byte, and the tokenizer is carried or refused by name.
/// </summary>
public class ConvertFormatsTests(ConvertFormatsTests.BadSources sources) : IClassFixture<ConvertFormatsTests.BadSources>
{
    private static int Kvaq(params string[] args) => Program.BuildRoot().Parse(args).Invoke();

    private static int[] Greedy(LlamaModel model, int n) => Fp32Decode.GreedyFromBos(model, n);

    private static float[] LogitsAtZero(LlamaModel model) => Fp32Decode.LogitsAtBos(model);

    private static int[] ReferenceTokens(string name) => Fixtures.ReferenceGreedy(name).GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();

    /// <summary>Every tensor's name, type, shape and bytes.</summary>
    private static unsafe List<(string Name, GgmlType Type, long[] Shape, byte[] Data)> GgufTensors(string path)
    {
        using var g = GgufFile.Open(path);
        return g.Tensors.Select(t => (t.Name, t.Type, t.Shape, new ReadOnlySpan<byte>(g.TensorData(t), checked((int)t.ByteSize)).ToArray())).ToList();
    }

    private static unsafe Dictionary<string, (string DType, long[] Shape, byte[] Data)> SafetensorsTensors(string path)
    {
        using var f = SafetensorsFile.Open(path);
        return f.Tensors.Values.ToDictionary(t => t.Name, t => (t.DType, t.Shape, new ReadOnlySpan<byte>(f.Data(t), checked((int)t.ByteCount)).ToArray()));
    }

    [Theory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public void Llama2cToGgufToHfToGguf_EveryStageGivesTheReferenceGreedyTokens_F32WeightsBitExact(string name)
    {
        using var dir = new TempDir();
        string a = dir.File("a.gguf"), hf = dir.File("hf"), b = dir.File("b.gguf");
        Assert.Equal(0, Kvaq("convert", "--model", name, "--out", a, "--type", "f32", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", a, "--out", hf, "--format", "hf", "--type", "f32", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", hf, "--out", b, "--type", "f32", "--json"));
        Assert.Equal(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"], Directory.GetFiles(hf).Select(Path.GetFileName).Order());

        var expected = ReferenceTokens(name);
        Assert.Equal(64, expected.Length);
        foreach (var stage in new[] { a, hf, b })
        {
            using var m = ModelLoader.Load(stage);
            Assert.Equal(stage == hf ? RopeLayout.HalfSplit : RopeLayout.Interleaved, m.Config.RopeLayout);
            Assert.True(expected.SequenceEqual(Greedy(m, 64)), $"{name}: greedy tokens of {Path.GetFileName(stage)} differ from reference-greedy.json");
        }

        // GGUF -> HF -> GGUF keeps every weight to the bit (Q/K rows permuted there and back), and the config.
        var before = GgufTensors(a);
        var after = GgufTensors(b);
        Assert.Equal(before.Select(t => (t.Name, t.Type, string.Join(',', t.Shape))), after.Select(t => (t.Name, t.Type, string.Join(',', t.Shape))));
        foreach (var (x, y) in before.Zip(after))
        {
            Assert.True(x.Data.AsSpan().SequenceEqual(y.Data), $"{name}: tensor {x.Name} changed in the round trip");
        }

        using (var ma = ModelLoader.Load(a))
        using (var mb = ModelLoader.Load(b))
        {
            Assert.Equal(ma.Config, mb.Config);

            // The tokenizer came back through tokenizer.json: same ids on real text, same decoded text.
            var text = File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..5000];
            using var original = ModelLoader.Load(name);
            var ids = original.Tokenizer!.Encode(text, addBos: true);
            Assert.Equal(ids, ma.Tokenizer!.Encode(text, addBos: true));
            Assert.Equal(ids, mb.Tokenizer!.Encode(text, addBos: true));
            Assert.Equal(original.Tokenizer.Decode(ids), mb.Tokenizer.Decode(ids));
        }
    }

    [Fact]
    public void HfFolderWeightsEqualAnIndependentHalfSplitRewrite()
    {
        // The test helper HfFolderWriter reorders Q/K rows on its own (HF row i = llama2.c row 2i, row i + d/2 = row 2i + 1).
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("ours"));
        Directory.CreateDirectory(dir.File("helper"));
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("ours"), "--json"));
        HfFolderWriter.Write(Fixtures.Stories260K, dir.File("helper"));
        var ours = SafetensorsTensors(Path.Combine(dir.File("ours"), "model.safetensors"));
        var helper = SafetensorsTensors(Path.Combine(dir.File("helper"), "model.safetensors"));
        Assert.Equal(helper.Keys.Order(), ours.Keys.Order());
        foreach (var (key, h) in helper)
        {
            Assert.Equal(h.DType, ours[key].DType);
            Assert.Equal(h.Shape, ours[key].Shape);
            Assert.True(h.Data.AsSpan().SequenceEqual(ours[key].Data), $"tensor {key} differs");
        }
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    [InlineData("f16")]
    [InlineData("bf16")]
    public void GgufRequantizationEqualsDirectConversionByteForByte(string type)
    {
        using var dir = new TempDir();
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("f32.gguf"), "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("direct.gguf"), "--type", type, "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("f32.gguf"), "--out", dir.File("requantized.gguf"), "--type", type, "--json"));
        var direct = File.ReadAllBytes(dir.File("direct.gguf"));
        Assert.Equal(direct, File.ReadAllBytes(dir.File("requantized.gguf")));
        Assert.NotEqual(direct.Length, new FileInfo(dir.File("f32.gguf")).Length);
    }

    [Fact]
    public void GgufRequantizationKeepsArchitectureDescriptionAndTokenizerKeys()
    {
        using var dir = new TempDir();
        Assert.Equal(0, Kvaq("convert", "--synthetic", "tiny-qwen2", "--out", dir.File("q.gguf"), "--type", "f16", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("q.gguf"), "--out", dir.File("q8.gguf"), "--type", "q8_0", "--json"));
        using var src = GgufFile.Open(dir.File("q.gguf"));
        using var dst = GgufFile.Open(dir.File("q8.gguf"));
        Assert.Equal("qwen2", dst.GetString("general.architecture"));
        Assert.Equal(src.GetString("general.name"), dst.GetString("general.name"));
        Assert.Equal(7, dst.GetInteger("general.file_type"));
        foreach (var key in src.MetadataKeys.Where(k => k.StartsWith("tokenizer.", StringComparison.Ordinal)))
        {
            Assert.Equal(src.MetadataTypes[key], dst.MetadataTypes[key]);
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(src.Get(key)), System.Text.Json.JsonSerializer.Serialize(dst.Get(key)));
        }

        Assert.Equal(GgmlType.Q8_0, dst.FindTensor("blk.0.attn_q.weight")!.Type);
        Assert.Equal(GgmlType.F32, dst.FindTensor("blk.0.attn_q.bias")!.Type);
        using var m = ModelLoader.Load(dir.File("q8.gguf"));
        Assert.Equal(RopeLayout.HalfSplit, m.Config.RopeLayout);
    }

    [Fact]
    public void GgufRequantizationCopiesTokenizerKeysOfAKindKvaqCannotBuildVerbatim()
    {
        // stories260K as GGUF F32 whose tokenizer.ggml.model is 'rwkv' (no tokenizer kvaq implements), with extra tokenizer.*
        // keys of other GGUF types (scalars and arrays), written by the project's GGUF writer.
        using var dir = new TempDir();
        string f32 = dir.File("f32.gguf"), odd = dir.File("odd.gguf"), q8 = dir.File("q8.gguf"), direct = dir.File("direct.gguf");
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", f32, "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", direct, "--type", "q8_0", "--json"));
        using (var m = ModelLoader.Load(f32))
        using (var g = GgufFile.Open(f32))
        {
            var keys = GgufTokenizerMetadata.FromGguf(g)!;
            keys.SetValue("tokenizer.ggml.model", GgufValueType.String, "rwkv");
            keys.SetValue("tokenizer.rwkv.flags", GgufValueType.Array, new byte[] { 1, 2, 255 }, GgufValueType.UInt8);
            keys.SetValue("tokenizer.rwkv.offsets", GgufValueType.Array, new short[] { -1, 7, short.MaxValue }, GgufValueType.Int16);
            keys.SetValue("tokenizer.rwkv.weights", GgufValueType.Array, new double[] { Math.PI, -0.5 }, GgufValueType.Float64);
            keys.SetValue("tokenizer.rwkv.mask", GgufValueType.Array, new[] { true, false }, GgufValueType.Bool);
            keys.SetValue("tokenizer.rwkv.big", GgufValueType.UInt64, 1UL << 40);
            keys.SetValue("tokenizer.rwkv.scale", GgufValueType.Float64, 0.125);
            GgufModelExporter.FromModel(m, keys, GgmlType.F32, "odd").Write(odd, 2);
        }

        var refused = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(odd)); // kvaq cannot build this tokenizer
        Assert.Contains("'rwkv' is not supported", refused.Message);
        Assert.Equal(0, Kvaq("convert", "--model", odd, "--out", q8, "--type", "q8_0", "--json"));

        using (var src = GgufFile.Open(odd))
        using (var dst = GgufFile.Open(q8))
        {
            var keys = src.MetadataKeys.Where(k => k.StartsWith("tokenizer.", StringComparison.Ordinal)).ToList();
            Assert.Contains("tokenizer.ggml.tokens", keys);
            Assert.Contains("tokenizer.rwkv.mask", keys);
            Assert.Equal(keys, dst.MetadataKeys.Where(k => k.StartsWith("tokenizer.", StringComparison.Ordinal)));
            foreach (var key in keys)
            {
                Assert.Equal(src.MetadataTypes[key], dst.MetadataTypes[key]);
                if (src.MetadataTypes[key] == GgufValueType.Array)
                {
                    Assert.Equal(src.ArrayElementTypes[key], dst.ArrayElementTypes[key]);
                }

                Assert.Equal(System.Text.Json.JsonSerializer.Serialize(src.Get(key)), System.Text.Json.JsonSerializer.Serialize(dst.Get(key)));
            }

            Assert.Equal("rwkv", dst.GetString("tokenizer.ggml.model"));
            Assert.Equal(7, dst.GetInteger("general.file_type"));
        }

        // The weights were re-quantized: every tensor as in the direct q8_0 conversion of the .bin, byte for byte.
        var expected = GgufTensors(direct);
        var actual = GgufTensors(q8);
        Assert.Equal(expected.Select(t => (t.Name, t.Type, string.Join(',', t.Shape))), actual.Select(t => (t.Name, t.Type, string.Join(',', t.Shape))));
        Assert.Contains(actual, t => t.Type == GgmlType.Q8_0);
        foreach (var (x, y) in expected.Zip(actual))
        {
            Assert.True(x.Data.AsSpan().SequenceEqual(y.Data), $"tensor {x.Name} differs from the direct conversion");
        }

        using var run = ModelLoader.Load(q8, Fixtures.Stories260KTokenizer);
        using var reference = ModelLoader.Load(direct);
        Assert.Equal(Greedy(reference, 16), Greedy(run, 16));
    }

    [Theory]
    [InlineData("f16", "F16", 2e-2)]
    [InlineData("bf16", "BF16", 1e-1)]
    public void HalfPrecisionHfFolderStaysCloseToF32(string type, string dtype, double tolerance)
    {
        using var dir = new TempDir();
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("h") + "/", "--type", type, "--json"));
        var tensors = SafetensorsTensors(Path.Combine(dir.File("h"), "model.safetensors"));
        Assert.Equal(dtype, tensors["model.layers.0.self_attn.q_proj.weight"].DType);
        Assert.Equal("F32", tensors["model.layers.0.input_layernorm.weight"].DType);
        using var half = ModelLoader.Load(dir.File("h"));
        using var f32 = ModelLoader.Load("stories260K");
        var a = LogitsAtZero(f32);
        var b = LogitsAtZero(half);
        double maxDiff = a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(maxDiff > 0 && maxDiff < tolerance, $"max logit difference {maxDiff}");
    }

    [Fact]
    public void Bf16GgufRunsItsMatricesAsBf16_LikeTheSameValuesInF32()
    {
        // BF16 matrices (norms F32), file type 32 (LLAMA_FTYPE_MOSTLY_BF16); the same values written back as F32 give the
        // same logits within float rounding (the BF16 kernel widens exactly and sums in its own order) and the same greedy tokens.
        using var dir = new TempDir();
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("b.gguf"), "--type", "bf16", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("b.gguf"), "--out", dir.File("f.gguf"), "--type", "f32", "--json"));
        using (var file = GgufFile.Open(dir.File("b.gguf")))
        {
            Assert.Equal(32, file.GetInteger("general.file_type"));
        }

        using var bf = ModelLoader.Load(dir.File("b.gguf"), Fixtures.Stories260KTokenizer);
        using var f32 = ModelLoader.Load(dir.File("f.gguf"), Fixtures.Stories260KTokenizer);
        Assert.Equal(GgmlType.BF16, bf.Weights.Layers[0].Wq.Type);
        Assert.Equal(GgmlType.F32, f32.Weights.Layers[0].Wq.Type);
        var a = LogitsAtZero(bf);
        var b = LogitsAtZero(f32);
        double maxDiff = a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(maxDiff < 1e-4, $"max logit difference {maxDiff}");
        Assert.Equal(Greedy(f32, 24), Greedy(bf, 24));
        using var original = ModelLoader.Load("stories260K");
        double vsOriginal = LogitsAtZero(original).Zip(a).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(vsOriginal > 0 && vsOriginal < 1e-1, $"max logit difference from the F32 original {vsOriginal}");
    }

    [Fact]
    public void QuantizedGgufIsDequantizedIntoTheHfFolder()
    {
        using var dir = new TempDir();
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("q4.gguf"), "--type", "q4_0", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("q4.gguf"), "--out", dir.File("hf"), "--format", "hf", "--json"));
        using var q4 = ModelLoader.Load(dir.File("q4.gguf"));
        using var hf = ModelLoader.Load(dir.File("hf"));
        Assert.Equal(GgmlType.F32, hf.Weights.Layers[0].W1.Type);

        // The F32 folder holds exactly the dequantized Q4_0 values (up and embedding rows are not permuted).
        var row = new float[q4.Config.Dim];
        var back = new float[q4.Config.Dim];
        q4.Weights.Layers[2].W3.DequantizeRow(17, row);
        hf.Weights.Layers[2].W3.DequantizeRow(17, back);
        Assert.Equal(row, back);
        Assert.Equal(Greedy(q4, 32), Greedy(hf, 32));
    }

    [Fact]
    public void LlamaThreeRopeScalingGoesIntoConfigJsonAndComesBack()
    {
        // tiny-llama: Llama 3 rope scaling stored in GGUF as rope_freqs.weight only; config.json needs its parameters.
        using var dir = new TempDir();
        Assert.Equal(0, Kvaq("convert", "--synthetic", "tiny-llama", "--out", dir.File("t.gguf"), "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("t.gguf"), "--out", dir.File("hf"), "--format", "hf", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("hf"), "--out", dir.File("back.gguf"), "--json"));
        using var hf = ModelLoader.Load(dir.File("hf"));
        Assert.Equal(new RopeScaling(32, 1, 4, 8192), hf.Config.RopeScaling);
        Assert.False(hf.Config.TiedEmbeddings);
        using var t = ModelLoader.Load(dir.File("t.gguf"));
        using var back = ModelLoader.Load(dir.File("back.gguf"));
        Assert.Equal(t.Weights.RopeFrequencyFactors, back.Weights.RopeFrequencyFactors);
        var tokens = new[] { 1, 300, 301, 7, 420, 99, 5, 260 };
        Assert.Equal(LogitsOf(t, tokens), LogitsOf(back, tokens));
        var viaHf = LogitsOf(hf, tokens);
        Assert.True(LogitsOf(t, tokens).Zip(viaHf).All(p => Math.Abs(p.First - p.Second) <= 1e-4f * (1 + Math.Abs(p.First))));
    }

    private static float[] LogitsOf(LlamaModel model, int[] tokens)
    {
        using var transformer = new Transformer(model, 2);
        using var cache = new FullPrecisionKvCache(transformer.CacheLayout(tokens.Length), half: false);
        var logits = new float[tokens.Length * model.Config.VocabSize];
        transformer.Forward(tokens, 0, cache, logits, allLogits: true);
        return logits;
    }

    [Fact]
    public void HfFolderWithByteLevelTokenizerIsCarriedAsGpt2Gguf()
    {
        // stories260K's weights with a 512-token byte-level tokenizer.json (GPT-2's first 256 merges): HF -> GGUF -> HF.
        using var dir = new TempDir();
        var hf = dir.File("hf");
        Directory.CreateDirectory(hf);
        HfFolderWriter.Write(Fixtures.Stories260K, hf);
        HfFolderWriter.WriteGpt2SubsetTokenizer(hf);
        Assert.Equal(0, Kvaq("convert", "--model", hf, "--out", dir.File("g.gguf"), "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("g.gguf"), "--out", dir.File("hf2"), "--format", "hf", "--json"));
        using (var g = GgufFile.Open(dir.File("g.gguf")))
        {
            Assert.Equal("gpt2", g.GetString("tokenizer.ggml.model"));
            Assert.Equal("gpt-2", g.GetString("tokenizer.ggml.pre"));
            Assert.Equal(256, ((string[])g.Get("tokenizer.ggml.merges")!).Length);
        }

        var text = File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..5000];
        using var original = ModelLoader.Load(hf);
        using var gguf = ModelLoader.Load(dir.File("g.gguf"));
        using var back = ModelLoader.Load(dir.File("hf2"));
        var ids = original.Tokenizer!.Encode(text, addBos: false);
        Assert.True(ids.Count is > 1000 and < 4000, $"{ids.Count} tokens: merges should apply");
        Assert.Equal(ids, gguf.Tokenizer!.Encode(text, addBos: false));
        Assert.Equal(ids, back.Tokenizer!.Encode(text, addBos: false));
        Assert.Equal(text, gguf.Tokenizer.Decode(ids));
        Assert.Equal(Greedy(original, 16), Greedy(gguf, 16));
    }

    [Fact]
    public void HfFolderIsShardedAsTransformersShardsIt()
    {
        // stories3M-q80 in F32 holds 12.6 MB of tensors; with 2 MB shards the 3.1 MB embedding gets a shard of its own.
        const long limit = 2_000_000;
        using var dir = new TempDir();
        string whole = dir.File("whole"), sharded = dir.File("sharded");
        Assert.Equal(0, Kvaq("convert", "--model", "stories3M-q80", "--out", whole, "--format", "hf", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", "stories3M-q80", "--out", sharded, "--format", "hf", "--max-shard-size", "2MB", "--json"));
        Assert.Equal(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"], Directory.GetFiles(whole).Select(Path.GetFileName).Order());

        var shardFiles = Directory.GetFiles(sharded, "*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        int n = shardFiles.Length;
        Assert.True(n > 3, $"{n} shards");
        Assert.Equal(Enumerable.Range(1, n).Select(i => $"model-{i:D5}-of-{n:D5}.safetensors"), shardFiles);
        Assert.Equal(
            new[] { "config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json" }.Concat(shardFiles).Order(StringComparer.Ordinal),
            Directory.GetFiles(sharded).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        using var index = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(sharded, "model.safetensors.index.json")));
        Assert.Equal(["metadata", "weight_map"], index.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal(["total_size"], index.RootElement.GetProperty("metadata").EnumerateObject().Select(p => p.Name));
        var weightMap = index.RootElement.GetProperty("weight_map").EnumerateObject().ToList();
        Assert.Equal(weightMap.Select(p => p.Name).Order(StringComparer.Ordinal), weightMap.Select(p => p.Name)); // sorted, as transformers writes it

        // Every tensor of the unsharded file is in exactly one shard, the one the index names, with the same bytes.
        var wholeTensors = SafetensorsTensors(Path.Combine(whole, "model.safetensors"));
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        long summed = 0;
        foreach (var file in shardFiles)
        {
            var tensors = SafetensorsTensors(Path.Combine(sharded, file!));
            Assert.NotEmpty(tensors);
            long shardBytes = tensors.Values.Sum(t => (long)t.Data.Length);
            Assert.True(shardBytes <= limit || tensors.Count == 1, $"{file}: {tensors.Count} tensors, {shardBytes} bytes over the {limit} limit");
            summed += shardBytes;
            foreach (var (name, t) in tensors)
            {
                seen.Add(name, file!); // throws on a tensor in two shards
                Assert.True(wholeTensors[name].Data.AsSpan().SequenceEqual(t.Data), $"tensor {name} differs");
            }
        }

        Assert.Equal(wholeTensors.Keys.Order(StringComparer.Ordinal), seen.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(weightMap.Count, seen.Count);
        Assert.All(weightMap, p => Assert.Equal(seen[p.Name], p.Value.GetString()));
        Assert.Equal(summed, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        Assert.Equal(wholeTensors.Values.Sum(t => (long)t.Data.Length), summed);
        Assert.Contains(seen, p => wholeTensors[p.Key].Data.Length > limit); // the oversized embedding was written, alone

        using var a = ModelLoader.Load(whole);
        using var b = ModelLoader.Load(sharded);
        Assert.Equal(a.Config, b.Config);
        Assert.Equal(Greedy(a, 64), Greedy(b, 64));
        Assert.Equal(ReferenceTokens("stories3M-q80"), Greedy(b, 64));
    }

    [Fact]
    public void HfFolderWithinMaxShardSizeIsOneFile()
    {
        using var dir = new TempDir();
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("hf"), "--format", "hf", "--max-shard-size", "2MiB", "--json"));
        Assert.Equal(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"], Directory.GetFiles(dir.File("hf")).Select(Path.GetFileName).Order());
    }

    [Theory]
    [InlineData("5GB", 5_000_000_000L)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("200KB", 200_000L)]
    [InlineData("200kb", 200_000L)]
    [InlineData("2GiB", 2_147_483_648L)]
    [InlineData("3MiB", 3_145_728L)]
    [InlineData("1KiB", 1_024L)]
    [InlineData("123456", 123_456L)]
    public void MaxShardSizeIsReadAsTransformersReadsIt(string text, long bytes) => Assert.Equal(bytes, HfModelExporter.ParseMaxShardSize(text));

    [Fact]
    public void ShardingMatchesTransformersSplit()
    {
        // huggingface_hub's split: a tensor over the limit goes alone at once, and the shard being filled carries on after it.
        var w = new SafetensorsWriter();
        foreach (var (name, bytes) in new[] { ("a", 40), ("b", 40), ("big", 200), ("c", 40), ("d", 80), ("e", 100) })
        {
            w.Add(name, "U8", [bytes], new byte[bytes]);
        }

        var shards = w.Shard(100);
        Assert.Equal([["big"], ["a", "b"], ["c"], ["d"], ["e"]], shards.Select(s => s.TensorNames.ToArray()));
        Assert.Equal([["a", "b", "big", "c", "d", "e"]], w.Shard(1000).Select(s => s.TensorNames.ToArray()));
    }

    [Fact]
    public void ExistingGgufFileIsReplaced()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("s.gguf"), "old contents");
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("s.gguf"), "--type", "q8_0", "--json"));
        using var m = ModelLoader.Load(dir.File("s.gguf"));
        Assert.Equal(GgmlType.Q8_0, m.Weights.Layers[0].Wq.Type);
    }

    [Fact]
    public void HfFolderIsWrittenIntoAnExistingEmptyFolder()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("empty"));
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("empty"), "--json"));
        Assert.True(File.Exists(Path.Combine(dir.File("empty"), "model.safetensors")));
        Assert.Equal(["empty"], Directory.GetDirectories(dir.Path).Select(Path.GetFileName)); // no partial folder left
    }

    [Theory]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/x.txt" }, "--out {dir}/x.txt: cannot tell the output format")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/x", "--format", "onnx" }, "--format: 'onnx' is not gguf, hf or llama2c")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/x.gguf", "--type", "f8" }, "--type: 'f8' is not one of f32, f16, bf16, q8_0, q4_0, q4_k_m, q4_k_s, q6_k, q2_k, q3_k_s, q3_k_m, q3_k_l, q5_k_s, q5_k_m, iq4_nl, iq4_xs, q4_1, q5_1, q5_0")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/hf/", "--type", "q8_0" }, "--type: 'q8_0' cannot be written to a Hugging Face folder")]
    [InlineData(new[] { "--synthetic", "tiny-llama", "--out", "{dir}/hf", "--format", "hf" }, "--synthetic writes GGUF only")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/full", "--format", "hf" }, "--out {dir}/full: the folder is not empty")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/full/a.txt", "--format", "hf" }, "--out {dir}/full/a.txt: is a file")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/full", "--format", "gguf" }, "--out {dir}/full: is a folder; give a file path such as {dir}/full/model.gguf, or --format hf")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/no/such/hf/" }, "--out {dir}/no/such/hf/: the folder {dir}/no/such does not exist")]
    [InlineData(new[] { "--model", "{dir}/full/s.gguf", "--out", "{dir}/full/s.gguf", "--type", "q8_0" }, "--out {dir}/full/s.gguf: is the model being converted")]
    [InlineData(new[] { "--model", "{dir}/notok", "--out", "{dir}/x.gguf" }, "{dir}/notok: the Hugging Face folder has no tokenizer.json; pass --tokenizer")]
    [InlineData(new[] { "--model", "{dir}/unigram", "--out", "{dir}/x.gguf" }, "{dir}/unigram/tokenizer.json: model type 'Unigram' is not supported")]
    [InlineData(new[] { "--model", "{dir}/oddregex", "--out", "{dir}/x.gguf" }, "{dir}/oddregex/tokenizer.json: byte-level pre-tokenizer")]
    [InlineData(new[] { "--model", "{dir}/notok", "--out", "{dir}/x.gguf", "--tokenizer", "{dir}/full/a.txt" }, "{dir}/full/a.txt: tokenizer file is shorter than its 4-byte header")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/hf", "--format", "hf", "--max-shard-size", "0" }, "--max-shard-size: '0' is zero")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/hf", "--format", "hf", "--max-shard-size", "abc" }, "--max-shard-size: 'abc' is not a size")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/hf", "--format", "hf", "--max-shard-size=-5MB" }, "--max-shard-size: '-5MB' is not a size")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/hf", "--format", "hf", "--max-shard-size", "1.5GB" }, "--max-shard-size: '1.5GB' is not a size")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/x.gguf", "--max-shard-size", "1MB" }, "--max-shard-size: applies to Hugging Face folders (--format hf) only")]
    public void BadConversionsFailWithOneClearLineAndLeaveNothingBehind(string[] args, string message)
    {
        var dir = sources.Dir;
        var before = Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Order().ToArray();
        var (rc, stdout, stderr) = KvaqProcess.Run(["convert", .. args.Select(a => a.Replace("{dir}", dir.Path))]);
        Assert.Equal(1, rc);
        Assert.Empty(stdout);
        var line = stderr.Split('\r', '\n').Last(l => l.StartsWith("kvaq: error: ", StringComparison.Ordinal));
        Assert.StartsWith("kvaq: error: " + message.Replace("{dir}", dir.Path), line);
        Assert.Equal(before, Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Order().ToArray());
    }

    /// <summary>
    /// The inputs of the bad-conversion cases, made once: a full folder (a file and a GGUF model), and stories260K as HF
    /// folders without tokenizer.json, with a Unigram one and with a byte-level one whose regex no GGUF pre-tokenizer has.
    /// </summary>
    public sealed class BadSources : IDisposable
    {
        private readonly TempDir _dir = new();

        public BadSources()
        {
            Directory.CreateDirectory(_dir.File("full"));
            File.WriteAllText(Path.Combine(_dir.File("full"), "a.txt"), "x");
            Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", Path.Combine(_dir.File("full"), "s.gguf"), "--json"));
            foreach (var (folder, tokenizerJson) in new[] { ("notok", null), ("unigram", """{"model":{"type":"Unigram","vocab":[["a",0.0]]}}"""), ("oddregex", OddRegexTokenizerJson()) })
            {
                Directory.CreateDirectory(_dir.File(folder));
                HfFolderWriter.Write(Fixtures.Stories260K, _dir.File(folder));
                if (tokenizerJson is not null)
                {
                    File.WriteAllText(Path.Combine(_dir.File(folder), "tokenizer.json"), tokenizerJson);
                }
            }
        }

        public TempDir Dir => _dir;

        public void Dispose() => _dir.Dispose();
    }

    /// <summary>A byte-level tokenizer.json of 512 tokens whose pre-tokenizer regex no GGUF pre-tokenizer has.</summary>
    private static string OddRegexTokenizerJson()
    {
        var vocab = new System.Text.Json.Nodes.JsonObject();
        for (int b = 0; b < 256; b++)
        {
            vocab[ByteLevelEncoding.Encode((byte)b).ToString()] = b;
        }

        for (int i = 256; i < 512; i++)
        {
            vocab[$"tok{i}"] = i;
        }

        return new System.Text.Json.Nodes.JsonObject
        {
            ["pre_tokenizer"] = System.Text.Json.Nodes.JsonNode.Parse("""{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{L}+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]}"""),
            ["model"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new System.Text.Json.Nodes.JsonArray() },
        }.ToJsonString();
    }
}
