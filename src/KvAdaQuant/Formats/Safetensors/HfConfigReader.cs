using System.Text.Json;
using KvAdaQuant.Model;

namespace KvAdaQuant.Formats.Safetensors;

/// <summary>Reads a Hugging Face <c>config.json</c> of a Llama-family model into a <see cref="ModelConfig"/> (half-split RoPE).</summary>
public static class HfConfigReader
{
    /// <summary>Architectures (<c>model_type</c>) this reader accepts.</summary>
    public static readonly IReadOnlySet<string> SupportedModelTypes = new HashSet<string>(StringComparer.Ordinal) { "llama", "mistral", "qwen2" };

    /// <summary>Parses <paramref name="path"/>; <paramref name="hasLmHead"/> says whether the weights hold <c>lm_head.weight</c> (ties the output when the config is silent).</summary>
    public static ModelConfig Read(string path, bool hasLmHead)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: config.json not found", path);
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}");
        }

        using (doc)
        {
            try
            {
                return Read(path, doc.RootElement, hasLmHead);
            }
            catch (InvalidOperationException e)
            {
                // A string that is not valid UTF-8 (or holds an escaped lone surrogate) cannot be read.
                throw new ModelFormatException(path, $"holds text that cannot be read: {e.Message}");
            }
        }
    }

    private static ModelConfig Read(string path, JsonElement root, bool hasLmHead)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new ModelFormatException(path, "config.json should hold a JSON object");
        }

        string modelType = root.TryGetProperty("model_type", out var mt) && mt.ValueKind == JsonValueKind.String ? mt.GetString()! : "llama";
        if (!SupportedModelTypes.Contains(modelType))
        {
            throw new ModelFormatException(path, $"model_type '{modelType}' is not supported (supported: {string.Join(", ", SupportedModelTypes)})");
        }

        if (root.TryGetProperty("hidden_act", out var act) && act.ValueKind == JsonValueKind.String && act.GetString() is not ("silu" or "swish"))
        {
            throw new ModelFormatException(path, $"hidden_act '{act.GetString()}' is not supported (expected silu)");
        }

        int Int(string key, int? fallback = null)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            {
                return fallback ?? throw new ModelFormatException(path, $"required field '{key}' is missing");
            }

            return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)
                ? i
                : throw new ModelFormatException(path, $"field '{key}' should be an integer, found {v}");
        }

        double Num(JsonElement obj, string key, double fallback)
        {
            if (!obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            {
                return fallback;
            }

            return v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new ModelFormatException(path, $"field '{key}' should be a number, found {v}");
        }

        int FirstId(string key, int fallback)
        {
            if (!root.TryGetProperty(key, out var v))
            {
                return fallback;
            }

            return v.ValueKind switch
            {
                JsonValueKind.Number when v.TryGetInt32(out int i) => i,
                JsonValueKind.Array when v.GetArrayLength() > 0 && v[0].ValueKind == JsonValueKind.Number && v[0].TryGetInt32(out int j) => j,
                JsonValueKind.Null => -1,
                _ => throw new ModelFormatException(path, $"field '{key}' should be a token id or a list of them, found {v}"),
            };
        }

        int dim = Int("hidden_size");
        int heads = Int("num_attention_heads");
        if (heads <= 0 || dim <= 0)
        {
            throw new ModelFormatException(path, $"hidden_size {dim} and num_attention_heads {heads} must be positive");
        }

        RopeScaling? scaling = null;
        if (root.TryGetProperty("rope_scaling", out var bad) && bad.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
        {
            throw new ModelFormatException(path, $"rope_scaling should be an object or null, found {bad.GetRawText()}");
        }

        if (root.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object)
        {
            string TypeField(JsonElement v, string key) => v.ValueKind switch
            {
                JsonValueKind.String => v.GetString()!,
                JsonValueKind.Null => string.Empty,
                _ => throw new ModelFormatException(path, $"rope_scaling.{key} should be a string, found {v.GetRawText()}"),
            };
            string type = rs.TryGetProperty("rope_type", out var rt) ? TypeField(rt, "rope_type")
                : rs.TryGetProperty("type", out var t) ? TypeField(t, "type") : string.Empty;
            if (type == "llama3")
            {
                scaling = new RopeScaling(
                    (float)Num(rs, "factor", 8),
                    (float)Num(rs, "low_freq_factor", 1),
                    (float)Num(rs, "high_freq_factor", 4),
                    (int)Num(rs, "original_max_position_embeddings", 8192));
            }
            else if (type is not ("default" or ""))
            {
                throw new ModelFormatException(path, $"rope_scaling type '{type}' is not supported (supported: llama3)");
            }
        }

        bool tied = root.TryGetProperty("tie_word_embeddings", out var tie) && tie.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? tie.GetBoolean()
            : !hasLmHead;

        var config = new ModelConfig
        {
            Architecture = modelType,
            Dim = dim,
            HiddenDim = Int("intermediate_size"),
            Layers = Int("num_hidden_layers"),
            Heads = heads,
            KvHeads = Int("num_key_value_heads", heads),
            HeadDim = Int("head_dim", dim / heads),
            VocabSize = Int("vocab_size"),
            ContextLength = Int("max_position_embeddings", 2048),
            NormEps = (float)Num(root, "rms_norm_eps", 1e-6),
            RopeTheta = (float)Num(root, "rope_theta", 10000),
            RopeLayout = RopeLayout.HalfSplit,
            RopeScaling = scaling,
            TiedEmbeddings = tied,
            BosToken = FirstId("bos_token_id", 1),
            EosToken = FirstId("eos_token_id", 2),
        };
        config.Validate(path);

        // -1 (null in config.json) leaves the choice to the tokenizer; any other id outside the vocabulary would reach
        // the forward pass as a token that has no embedding row.
        if (config.BosToken < -1 || config.BosToken >= config.VocabSize || config.EosToken < -1 || config.EosToken >= config.VocabSize)
        {
            throw new ModelFormatException(path, $"bos_token_id {config.BosToken} / eos_token_id {config.EosToken} lie outside the vocabulary of {config.VocabSize} (vocab_size)");
        }

        return config;
    }
}
