using System.Text.Json;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Formats.Safetensors;

/// <summary>
/// Loads a Hugging Face model folder: <c>config.json</c>, the weights in <c>*.safetensors</c> (one file, or shards
/// listed by <c>model.safetensors.index.json</c>) and <c>tokenizer.json</c>. Matrices stay in the memory-mapped
/// files (F32, F16 or BF16); HF's q/k projections are not permuted, so RoPE runs half-split.
/// </summary>
public static unsafe class HfModelLoader
{
    /// <summary>Index file naming the shard of each tensor.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>Whether <paramref name="dir"/> looks like a Hugging Face model folder.</summary>
    public static bool IsHfFolder(string dir) => File.Exists(Path.Combine(dir, "config.json"))
        && Directory.EnumerateFiles(dir, "*.safetensors").Any();

    /// <summary>Loads the model in <paramref name="dir"/>; <paramref name="tokenizerPath"/> overrides <c>tokenizer.json</c>.</summary>
    public static LlamaModel Load(string dir, string? tokenizerPath = null)
    {
        var files = OpenShards(dir);
        try
        {
            var tensors = new Dictionary<string, (SafetensorsFile File, SafetensorsTensorInfo Info)>(StringComparer.Ordinal);
            foreach (var f in files)
            {
                foreach (var (name, info) in f.Tensors)
                {
                    if (!tensors.TryAdd(name, (f, info)))
                    {
                        throw new ModelFormatException(f.Path, $"tensor '{name}' also appears in {tensors[name].File.Path}");
                    }
                }
            }

            var config = HfConfigReader.Read(Path.Combine(dir, "config.json"), tensors.ContainsKey("lm_head.weight"));
            var weights = BuildWeights(dir, config, tensors, files);
            var model = new LlamaModel(dir, "safetensors", config, weights, null);
            try
            {
                var tok = tokenizerPath ?? Path.Combine(dir, "tokenizer.json");
                if (tokenizerPath is null && File.Exists(tok))
                {
                    var t = HfTokenizerJson.Load(tok, config.BosToken, config.EosToken);
                    if (t.VocabSize > config.VocabSize)
                    {
                        throw new ModelFormatException(tok, $"tokenizer has {t.VocabSize} tokens but config.json's vocab_size is {config.VocabSize}: tokenizer and model vocabularies disagree");
                    }

                    model.Tokenizer = t;
                }
                else if (tokenizerPath is not null)
                {
                    model.Tokenizer = ModelLoader.LoadTokenizer(tokenizerPath, config.VocabSize);
                }

                return model;
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }
        catch
        {
            foreach (var f in files)
            {
                f.Dispose();
            }

            throw;
        }
    }

    private static List<SafetensorsFile> OpenShards(string dir)
    {
        var index = Path.Combine(dir, IndexFileName);
        IEnumerable<string> paths;
        if (File.Exists(index))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                {
                    throw new ModelFormatException(index, "no \"weight_map\" object");
                }

                paths = map.EnumerateObject().Select(p => p.Value.ValueKind == JsonValueKind.String
                        ? p.Value.GetString()!
                        : throw new ModelFormatException(index, $"weight_map entry '{p.Name}' is not a file name but {p.Value.ValueKind} {p.Value.GetRawText()}"))
                    .Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
            }
            catch (JsonException e)
            {
                throw new ModelFormatException(index, $"not valid JSON: {e.Message}");
            }
            catch (InvalidOperationException e)
            {
                // A name that is not valid UTF-8 (or holds an escaped lone surrogate) cannot be read.
                throw new ModelFormatException(index, $"holds text that cannot be read: {e.Message}");
            }

            foreach (var p in paths)
            {
                if (p.Contains('/') || p.Contains('\\') || p.Contains("..", StringComparison.Ordinal))
                {
                    throw new ModelFormatException(index, $"shard name '{p}' must be a plain file name in the model folder");
                }

                if (!File.Exists(Path.Combine(dir, p)))
                {
                    throw new ModelFormatException(index, $"shard '{p}' listed in weight_map is missing from {dir}");
                }
            }

            paths = paths.Select(p => Path.Combine(dir, p));
        }
        else
        {
            paths = Directory.EnumerateFiles(dir, "*.safetensors").Order(StringComparer.Ordinal).ToList();
        }

        var files = new List<SafetensorsFile>();
        try
        {
            foreach (var p in paths)
            {
                files.Add(SafetensorsFile.Open(p));
            }
        }
        catch
        {
            foreach (var f in files)
            {
                f.Dispose();
            }

            throw;
        }

        if (files.Count == 0)
        {
            throw new ModelFormatException(dir, "no .safetensors files");
        }

        return files;
    }

    private static ModelWeights BuildWeights(string dir, ModelConfig c, Dictionary<string, (SafetensorsFile File, SafetensorsTensorInfo Info)> tensors, List<SafetensorsFile> files)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        (SafetensorsFile File, SafetensorsTensorInfo Info) Find(string name)
        {
            used.Add(name);
            return tensors.TryGetValue(name, out var t)
                ? t
                : throw new ModelFormatException(dir, $"tensor '{name}' is missing from the safetensors files");
        }

        void CheckShape(SafetensorsFile f, SafetensorsTensorInfo t, params long[] expected)
        {
            if (!t.Shape.SequenceEqual(expected))
            {
                throw new ModelFormatException(f.Path, $"tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}] but config.json implies [{string.Join(", ", expected)}]");
            }
        }

        WeightMatrix Mat(string name, int rows, int cols)
        {
            var (f, t) = Find(name);
            CheckShape(f, t, rows, cols);
            var type = t.DType switch
            {
                "F32" => GgmlType.F32,
                "F16" => GgmlType.F16,
                "BF16" => GgmlType.BF16,
                _ => throw new ModelFormatException(f.Path, $"tensor '{name}': dtype {t.DType} is not supported for weights (F32, F16, BF16)"),
            };
            return new WeightMatrix(name, type, rows, cols, f.Data(t));
        }

        float[] Vec(string name, int n)
        {
            var (f, t) = Find(name);
            CheckShape(f, t, n);
            return ReadFloats(f, t);
        }

        float[]? OptionalVec(string name, int n) => tensors.ContainsKey(name) ? Vec(name, n) : null;

        var emb = Mat("model.embed_tokens.weight", c.VocabSize, c.Dim);
        var layers = new LayerWeights[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"model.layers.{i}.";
            layers[i] = new LayerWeights
            {
                AttentionNorm = Vec(p + "input_layernorm.weight", c.Dim),
                Wq = Mat(p + "self_attn.q_proj.weight", c.QDim, c.Dim),
                Wk = Mat(p + "self_attn.k_proj.weight", c.KvDim, c.Dim),
                Wv = Mat(p + "self_attn.v_proj.weight", c.KvDim, c.Dim),
                Wo = Mat(p + "self_attn.o_proj.weight", c.Dim, c.QDim),
                Bq = OptionalVec(p + "self_attn.q_proj.bias", c.QDim),
                Bk = OptionalVec(p + "self_attn.k_proj.bias", c.KvDim),
                Bv = OptionalVec(p + "self_attn.v_proj.bias", c.KvDim),
                FfnNorm = Vec(p + "post_attention_layernorm.weight", c.Dim),
                W1 = Mat(p + "mlp.gate_proj.weight", c.HiddenDim, c.Dim),
                W2 = Mat(p + "mlp.down_proj.weight", c.Dim, c.HiddenDim),
                W3 = Mat(p + "mlp.up_proj.weight", c.HiddenDim, c.Dim),
            };
        }

        var norm = Vec("model.norm.weight", c.Dim);
        var output = c.TiedEmbeddings ? emb : Mat("lm_head.weight", c.VocabSize, c.Dim);
        CheckUnused(tensors, used, c.Layers);
        return new ModelWeights(emb, layers, norm, output, files);
    }

    /// <summary>
    /// A tensor the forward pass does not read would be silently left out, and the model would compute something else:
    /// each is an error naming it, except those that change nothing: RoPE's <c>inv_freq</c> buffers (config.json gives
    /// them), an <c>lm_head.weight</c> that tied embeddings replace (as transformers does), and all-zero biases of the
    /// output projection and the MLP (written by exporters that give every projection a bias).
    /// </summary>
    private static void CheckUnused(Dictionary<string, (SafetensorsFile File, SafetensorsTensorInfo Info)> tensors, HashSet<string> used, int layers)
    {
        foreach (var (name, (file, info)) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            if (used.Contains(name) || name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal) || name == "lm_head.weight")
            {
                continue;
            }

            // A config that lost layers would run the first ones only (llama.cpp refuses such a GGUF: "wrong number of tensors").
            var layer = System.Text.RegularExpressions.Regex.Match(name, @"^model\.layers\.([0-9]+)\.");
            if (layer.Success && int.TryParse(layer.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture, out int index) && index >= layers)
            {
                throw new ModelFormatException(file.Path, $"tensor '{name}' is for layer {index}, but config.json's num_hidden_layers is {layers}: the checkpoint has more layers than the config says");
            }

            bool zeroBias = (name.EndsWith(".self_attn.o_proj.bias", StringComparison.Ordinal) || name.EndsWith("_proj.bias", StringComparison.Ordinal) && name.Contains(".mlp.", StringComparison.Ordinal))
                && ReadFloats(file, info).All(x => x == 0);
            if (!zeroBias)
            {
                throw new ModelFormatException(file.Path, $"tensor '{name}' is not part of a llama, mistral or qwen2 model as kvaq runs it (nonzero output-projection and MLP biases are not supported); loading without it would compute another model");
            }
        }
    }

    private static float[] ReadFloats(SafetensorsFile f, SafetensorsTensorInfo t)
    {
        int n = checked((int)t.ElementCount);
        var v = new float[n];
        byte* p = f.Data(t);
        switch (t.DType)
        {
            case "F32":
                new ReadOnlySpan<float>(p, n).CopyTo(v);
                break;
            case "F16":
                for (int i = 0; i < n; i++)
                {
                    v[i] = (float)((Half*)p)[i];
                }

                break;
            case "BF16":
                for (int i = 0; i < n; i++)
                {
                    v[i] = BitConverter.Int32BitsToSingle(((ushort*)p)[i] << 16);
                }

                break;
            default:
                throw new ModelFormatException(f.Path, $"tensor '{t.Name}': dtype {t.DType} is not supported (F32, F16, BF16)");
        }

        return v;
    }
}
