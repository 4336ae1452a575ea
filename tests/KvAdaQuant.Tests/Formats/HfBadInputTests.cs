using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Safetensors;

namespace KvAdaQuant.Tests.Formats;

/// <summary>Malformed Hugging Face folders fail with a message naming the file and what is wrong.</summary>
public class HfBadInputTests
{
    private static ModelFormatException LoadFails(string dir)
        => Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir).Dispose());

    private static TempDir Folder()
    {
        var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path);
        return dir;
    }

    [Fact]
    public void TruncatedSafetensorsIsRejected()
    {
        using var dir = Folder();
        var path = dir.File("model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        var e = LoadFails(dir.Path);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("truncated?", e.Message);
        Assert.Contains("model.norm.weight", e.Message); // the last tensor is the one cut short
    }

    [Fact]
    public void HeaderLengthLargerThanFileIsRejected()
    {
        using var dir = Folder();
        var path = dir.File("model.safetensors");
        var bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1UL << 40); // a forged terabyte header
        File.WriteAllBytes(path, bytes);
        var e = LoadFails(dir.Path);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains($"header length {1UL << 40} is larger than the rest of the {bytes.Length}-byte file", e.Message);
    }

    [Fact]
    public void TinyFileIsRejected()
    {
        using var dir = Folder();
        File.WriteAllBytes(dir.File("model.safetensors"), [1, 2, 3]);
        Assert.Contains("too short for the 8-byte safetensors header length", LoadFails(dir.Path).Message);
    }

    [Fact]
    public void UnknownDtypeIsRejected()
    {
        using var dir = Folder();
        var path = dir.File("model.safetensors");
        var bytes = File.ReadAllBytes(path);
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = Encoding.UTF8.GetString(bytes, 8, headerLength);
        int at = header.IndexOf("\"F32\"", StringComparison.Ordinal);
        var forged = header[..at] + "\"Q9X\"" + header[(at + 5)..];
        Encoding.UTF8.GetBytes(forged).CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        var e = LoadFails(dir.Path);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("unknown dtype 'Q9X'", e.Message);
    }

    [Fact]
    public void UnsupportedWeightDtypeIsRejected()
    {
        using var dir = Folder();
        new SafetensorsWriter()
            .Add("model.embed_tokens.weight", "I32", [512, 64], new byte[512 * 64 * 4])
            .Write(dir.File("model.safetensors"));
        var e = LoadFails(dir.Path);
        Assert.Contains("model.embed_tokens.weight", e.Message);
        Assert.Contains("dtype I32 is not supported for weights", e.Message);
    }

    [Fact]
    public void MissingTensorIsRejected()
    {
        using var dir = Folder();
        var path = dir.File("model.safetensors");
        using (var f = SafetensorsFile.Open(path))
        {
            Assert.True(f.Tensors.ContainsKey("model.layers.3.mlp.up_proj.weight"));
        }

        // Rewrite the file without one tensor.
        var writer = new SafetensorsWriter();
        using (var f = SafetensorsFile.Open(path))
        {
            foreach (var t in f.Tensors.Values.Where(t => t.Name != "model.layers.3.mlp.up_proj.weight"))
            {
                unsafe
                {
                    writer.Add(t.Name, t.DType, t.Shape, new ReadOnlySpan<byte>(f.Data(t), (int)t.ByteCount).ToArray());
                }
            }
        }

        writer.Write(path);
        var e = LoadFails(dir.Path);
        Assert.Contains(dir.Path, e.Message);
        Assert.Contains("tensor 'model.layers.3.mlp.up_proj.weight' is missing", e.Message);
    }

    /// <summary>Rewrites the folder's model.safetensors with <paramref name="extra"/> tensors added (F32).</summary>
    private static void AddTensors(string path, params (string Name, float[] Values)[] extra)
    {
        var writer = new SafetensorsWriter();
        using (var f = SafetensorsFile.Open(path))
        {
            foreach (var t in f.Tensors.Values)
            {
                unsafe
                {
                    writer.Add(t.Name, t.DType, t.Shape, new ReadOnlySpan<byte>(f.Data(t), (int)t.ByteCount).ToArray());
                }
            }
        }

        foreach (var (name, values) in extra)
        {
            writer.Add(name, "F32", [values.Length], values);
        }

        writer.Write(path);
    }

    [Theory]
    [InlineData("model.layers.2.self_attn.o_proj.bias", 64)]
    [InlineData("model.layers.0.mlp.down_proj.bias", 64)]
    [InlineData("model.layers.4.post_feedforward_layernorm.weight", 64)]
    public void ATensorTheForwardPassWouldNotReadIsRejected(string name, int length)
    {
        // Left out, it would make kvaq compute another model than the checkpoint's, silently.
        using var dir = Folder();
        var values = Enumerable.Range(0, length).Select(i => 0.01f * (i + 1)).ToArray();
        AddTensors(dir.File("model.safetensors"), (name, values));
        var e = LoadFails(dir.Path);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains($"tensor '{name}' is not part of a llama, mistral or qwen2 model as kvaq runs it", e.Message);
    }

    [Fact]
    public void TensorsThatChangeNothingAreAccepted()
    {
        // RoPE's inv_freq buffer (older checkpoints save it) and all-zero output/MLP biases leave the model as it is.
        using var dir = Folder();
        AddTensors(
            dir.File("model.safetensors"),
            ("model.layers.0.self_attn.rotary_emb.inv_freq", new float[4]),
            ("model.layers.1.self_attn.o_proj.bias", new float[64]),
            ("model.layers.1.mlp.up_proj.bias", new float[172]));
        using var m = ModelLoader.Load(dir.Path);
        Assert.Equal(5, m.Config.Layers);
    }

    [Fact]
    public void WrongShapeIsRejected()
    {
        using var dir = Folder();
        var cfg = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(File.ReadAllText(dir.File("config.json")))!;
        var edited = cfg.ToDictionary(k => k.Key, k => (object)k.Value);
        edited["intermediate_size"] = 176;
        File.WriteAllText(dir.File("config.json"), JsonSerializer.Serialize(edited));
        var e = LoadFails(dir.Path);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("has shape [172, 64] but config.json implies [176, 64]", e.Message);
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("num_hidden_layers")]
    [InlineData("vocab_size")]
    public void ConfigMissingFieldIsRejected(string field)
    {
        using var dir = Folder();
        var cfg = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(File.ReadAllText(dir.File("config.json")))!;
        cfg.Remove(field);
        File.WriteAllText(dir.File("config.json"), JsonSerializer.Serialize(cfg));
        var e = LoadFails(dir.Path);
        Assert.Contains("config.json", e.Message);
        Assert.Contains($"required field '{field}' is missing", e.Message);
    }

    [Fact]
    public void MissingShardIsRejected()
    {
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path, shards: 2);
        File.Delete(dir.File("model-00002-of-00002.safetensors"));
        var e = LoadFails(dir.Path);
        Assert.Contains(HfModelLoader.IndexFileName, e.Message);
        Assert.Contains("shard 'model-00002-of-00002.safetensors' listed in weight_map is missing", e.Message);
    }

    [Fact]
    public void AConfigThatLostLayersNamesTheLayerNotABias()
    {
        // The first tensor of layer 3 was "not part of a llama, mistral or qwen2 model ... (nonzero output-projection and
        // MLP biases are not supported)".
        using var dir = Folder();
        EditConfig(dir, cfg => cfg["num_hidden_layers"] = JsonSerializer.SerializeToElement(3));
        var e = LoadFails(dir.Path);
        Assert.EndsWith("model.safetensors: tensor 'model.layers.3.input_layernorm.weight' is for layer 3, but config.json's num_hidden_layers is 3: the checkpoint has more layers than the config says", e.Message);
    }

    [Fact]
    public void ARopeScalingThatIsNotAnObjectIsRejected()
    {
        // It was ignored: the model ran without the scaling the config meant to give.
        using var dir = Folder();
        EditConfig(dir, cfg => cfg["rope_scaling"] = JsonSerializer.SerializeToElement("linear"));
        Assert.EndsWith("config.json: rope_scaling should be an object or null, found \"linear\"", LoadFails(dir.Path).Message);
    }

    [Theory]
    [InlineData("[]", "tokenizer.json: should hold a JSON object with a \"model\", found Array")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}]}", "tokenizer.json: model.vocab is empty: a BPE tokenizer needs its tokens there (added_tokens only name the special ones)")]
    public void AMalformedTokenizerJsonIsRejected(string json, string message)
    {
        // An empty vocab with an added token loaded: generate then failed on the first token with "token 403 is outside
        // the vocabulary of 1", naming no file.
        using var dir = Folder();
        File.WriteAllText(dir.File("tokenizer.json"), json);
        Assert.EndsWith(message, LoadFails(dir.Path).Message);
    }

    private static void EditConfig(TempDir dir, Action<Dictionary<string, JsonElement>> edit)
    {
        var cfg = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(File.ReadAllText(dir.File("config.json")))!;
        edit(cfg);
        File.WriteAllText(dir.File("config.json"), JsonSerializer.Serialize(cfg));
    }

    [Fact]
    public void TokenizerLargerThanModelVocabularyIsRejected()
    {
        using var dir = Folder();
        var vocab = Enumerable.Range(0, 600).ToDictionary(i => $"t{i}", i => i);
        File.WriteAllText(dir.File("tokenizer.json"), JsonSerializer.Serialize(new { model = new { type = "BPE", vocab, merges = Array.Empty<string>() } }));
        var e = LoadFails(dir.Path);
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("tokenizer has 600 tokens but config.json's vocab_size is 512", e.Message);
    }

    // Found by LoaderFuzzTests: each of these threw InvalidOperationException, ArgumentException, IndexOutOfRangeException,
    // KeyNotFoundException, FormatException or NullReferenceException from inside System.Text.Json or the tokenizer, naming no file.

    /// <summary>Rewrites the JSON header of <paramref name="path"/> (the data section is unchanged: its offsets are relative).</summary>
    private static void EditHeader(string path, Func<string, string> edit)
    {
        var bytes = File.ReadAllBytes(path);
        int length = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = Encoding.UTF8.GetBytes(edit(Encoding.UTF8.GetString(bytes, 8, length)));
        var prefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
        File.WriteAllBytes(path, [.. prefix, .. header, .. bytes.AsSpan(8 + length)]);
    }

    [Theory]
    [InlineData("\"shape\":[", "\"shape\":[\"x\",", "tensor 'model.embed_tokens.weight': dimension 0 = x is impossible for a data section of")]
    [InlineData("\"data_offsets\":[0,", "\"data_offsets\":[null,", "tensor 'model.embed_tokens.weight': data_offsets [, 131072] are not an increasing pair of byte offsets")]
    [InlineData("{", "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[0,256]},", "tensor 'model.norm.weight' appears twice in the header")]
    public void AMalformedSafetensorsHeaderEntryIsRejected(string find, string replace, string message)
    {
        using var dir = Folder();
        var path = dir.File("model.safetensors");
        EditHeader(path, h =>
        {
            int at = h.IndexOf(find, StringComparison.Ordinal);
            return h[..at] + replace + h[(at + find.Length)..];
        });
        var e = LoadFails(dir.Path);
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void ATensorNameThatIsNotUtf8IsRejected()
    {
        using var dir = Folder();
        var path = dir.File("model.safetensors");
        var bytes = File.ReadAllBytes(path);
        bytes[ConvertedModels.IndexOf(bytes, "model.norm.weight")] = 0xff;
        File.WriteAllBytes(path, bytes);
        var e = LoadFails(dir.Path);
        Assert.StartsWith($"{path}: header (bytes 8..", e.Message);
        Assert.Contains("holds text that cannot be read", e.Message);
    }

    [Theory]
    [InlineData("[]", "no \"weight_map\" object")]
    [InlineData("{\"weight_map\": {\"model.norm.weight\": 3}}", "weight_map entry 'model.norm.weight' is not a file name but Number 3")]
    public void AMalformedIndexIsRejected(string json, string message)
    {
        using var dir = new TempDir();
        HfFolderWriter.Write(Fixtures.Stories260K, dir.Path, shards: 2);
        File.WriteAllText(dir.File(HfModelLoader.IndexFileName), json);
        Assert.Equal($"{dir.File(HfModelLoader.IndexFileName)}: {message}", LoadFails(dir.Path).Message);
    }

    [Theory]
    [InlineData("eos_token_id", "[\"x\"]", "field 'eos_token_id' should be a token id or a list of them, found [\"x\"]")]
    [InlineData("rope_scaling", "{\"rope_type\": 3}", "rope_scaling.rope_type should be a string, found 3")]
    [InlineData("bos_token_id", "100000", "bos_token_id 100000 / eos_token_id 2 lie outside the vocabulary of 512 (vocab_size)")]
    [InlineData("eos_token_id", "-2", "bos_token_id 1 / eos_token_id -2 lie outside the vocabulary of 512 (vocab_size)")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 0}", "rope scaling factor must be positive, found 0")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"low_freq_factor\": 4, \"high_freq_factor\": 1}", "rope scaling low_freq_factor 4 and high_freq_factor 1 must be positive, high above low")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"original_max_position_embeddings\": -1}", "rope scaling original context length must be positive, found -1")]
    public void AMalformedConfigValueIsRejected(string field, string json, string message)
    {
        // A BOS id outside the vocabulary loaded and failed on the first forward pass with ArgumentOutOfRangeException; a
        // rope_scaling factor of 0 loaded and made every rotated key NaN, which the cache refused ("non-finite K value")
        // naming no file; low_freq_factor above high_freq_factor or a negative original length loaded as meaningless factors.
        using var dir = Folder();
        EditConfig(dir, cfg => cfg[field] = JsonDocument.Parse(json).RootElement.Clone());
        Assert.Equal($"{dir.File("config.json")}: {message}", LoadFails(dir.Path).Message);
    }

    [Fact]
    public void AConfigStringThatIsNotUtf8IsRejected()
    {
        using var dir = Folder();
        var path = dir.File("config.json");
        var bytes = File.ReadAllBytes(path);
        bytes[ConvertedModels.IndexOf(bytes, "\"llama\"") + 1] = 0xff;
        File.WriteAllBytes(path, bytes);
        Assert.StartsWith($"{path}: holds text that cannot be read", LoadFails(dir.Path).Message);
    }

    [Theory]
    [InlineData("\"merges\": [[\"a\"]]", "model.merges[0] should be a string \"a b\" or a pair of strings, found [\"a\"]")]
    [InlineData("\"merges\": [\"a b\", null]", "model.merges[1] should be a string \"a b\" or a pair of strings, found null")]
    [InlineData("\"merges\": [], \"extra\": 0}, \"added_tokens\": [{\"content\": \"<s>\"}], \"x\": {", "added_tokens[0] should be an object with an integer \"id\" and a string \"content\", found {\"content\": \"<s>\"}")]
    [InlineData("\"merges\": [], \"extra\": 0}, \"added_tokens\": [{\"id\": 1e30, \"content\": \"<s>\"}], \"x\": {", "added_tokens[0].id should be an integer token id, found 1e30")]
    [InlineData("\"merges\": [], \"vocab2\": {\"c\": 3}", null)]
    public void AMalformedTokenizerValueIsRejected(string rest, string? message)
    {
        using var dir = Folder();
        string json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, " + rest + "}}";
        File.WriteAllText(dir.File("tokenizer.json"), json);
        if (message is null)
        {
            ModelLoader.Load(dir.Path).Dispose(); // the frame of the cases above is itself a valid tokenizer
            File.WriteAllText(dir.File("tokenizer.json"), json.Replace("\"b\": 1", "\"b\": 2147483648", StringComparison.Ordinal));
            message = "model.vocab['b'] should be an integer token id, found 2147483648";
        }

        Assert.Equal($"{dir.File("tokenizer.json")}: {message}", LoadFails(dir.Path).Message);
    }

    [Fact]
    public void A_lone_surrogate_in_the_chat_template_is_an_error_naming_the_file_and_field()
    {
        // Was "a bug in kvaq" (InvalidOperationException from GetString); found by hand after the serve fuzzing found the same in requests.
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"chat_template": "<|im_start|>\ud800"}""");
        var e = Assert.Throws<ModelFormatException>(() => ChatTemplateText.Read(dir.Path, null));
        Assert.Contains(dir.File("tokenizer_config.json"), e.Message, StringComparison.Ordinal);
        Assert.Contains("the string at $.chat_template escapes half of a UTF-16 surrogate pair", e.Message, StringComparison.Ordinal);
    }
}
