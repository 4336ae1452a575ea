using System.Text.Json.Nodes;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats.Safetensors;

/// <summary>
/// Writes a loaded model (any format) as the weights half of a Hugging Face folder that <see cref="HfModelLoader"/> and
/// transformers read: <c>config.json</c> (<c>LlamaForCausalLM</c>, <c>MistralForCausalLM</c> or <c>Qwen2ForCausalLM</c>)
/// and one <c>model.safetensors</c> (or transformers' shards and index past a size). Matrices (the embedding, projections, <c>lm_head</c> unless tied) take the requested
/// dtype; norms and biases stay F32. Quantized weights are dequantized row by row. Q and K rows (and biases) are reordered
/// head by head to Hugging Face's half-split RoPE layout when the model uses interleaved pairs (llama2.c, GGUF
/// <c>llama</c>; <see cref="RopeRowOrder"/>), the inverse of what llama.cpp's converter does.
/// </summary>
public static class HfModelExporter
{
    /// <summary>The weights file written when the tensors fit in one shard.</summary>
    public const string WeightsFileName = "model.safetensors";

    /// <summary>The default largest shard, 5 GB (5 * 10^9 bytes of tensor data), as transformers' <c>save_pretrained</c>.</summary>
    public const long DefaultMaxShardSize = 5_000_000_000;

    /// <summary>dtypes the weights can be written in.</summary>
    public static IReadOnlyList<string> DTypes { get; } = ["F32", "F16", "BF16"];

    /// <summary>
    /// Writes <c>config.json</c> and the weights of <paramref name="model"/> into the existing folder <paramref name="dir"/>,
    /// matrices as <paramref name="dtype"/>; returns the bytes written. Weights whose tensor data fits in
    /// <paramref name="maxShardSize"/> bytes go to one <c>model.safetensors</c>; more are split as transformers'
    /// <c>save_pretrained</c> splits them (<see cref="SafetensorsWriter.Shard"/>) into <c>model-00001-of-0000N.safetensors</c>,
    /// ... and <c>model.safetensors.index.json</c> (<c>metadata.total_size</c>, the tensor data bytes; <c>weight_map</c>,
    /// each tensor's shard; keys sorted, indented by 2, as transformers writes it).
    /// </summary>
    public static long Write(LlamaModel model, string dir, string dtype, int threads = 0, IProgress<double>? progress = null, long maxShardSize = DefaultMaxShardSize)
    {
        if (!DTypes.Contains(dtype))
        {
            throw new ArgumentException($"--type: a Hugging Face folder holds {string.Join(", ", DTypes)} weights, not {dtype}");
        }

        if (maxShardSize <= 0)
        {
            throw new ArgumentException($"--max-shard-size: {maxShardSize} bytes; the largest shard must be at least one byte");
        }

        var config = ConfigJson(model, dtype);
        var writer = CreateWeights(model, dtype);
        long bytes = WriteShards(writer, dir, threads, progress, maxShardSize);
        var configText = config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
        File.WriteAllText(Path.Combine(dir, "config.json"), configText);
        return bytes + configText.Length;
    }

    /// <summary>
    /// Parses a largest shard size as transformers' <c>max_shard_size</c> reads it: a whole number of bytes, or a whole number
    /// followed by a unit, KB/MB/GB (10^3, 10^6, 10^9) or KiB/MiB/GiB (2^10, 2^20, 2^30), in any case (<c>5GB</c>,
    /// <c>500MB</c>, <c>200KB</c>). Zero, negative, fractional or unparsable sizes are refused naming <c>--max-shard-size</c>.
    /// </summary>
    public static long ParseMaxShardSize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var s = text.Trim();
        (string Suffix, long Factor)[] units = [("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000)];
        long factor = 1;
        foreach (var (suffix, f) in units)
        {
            if (s.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                s = s[..^suffix.Length].TrimEnd();
                factor = f;
                break;
            }
        }

        if (s.Length == 0 || !s.All(char.IsAsciiDigit) || !long.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long n))
        {
            throw new ArgumentException($"--max-shard-size: '{text}' is not a size; give a whole number of bytes or one followed by KB, MB, GB (10^3, 10^6, 10^9) or KiB, MiB, GiB, such as 5GB, 500MB or 200KB");
        }

        if (n == 0)
        {
            throw new ArgumentException($"--max-shard-size: '{text}' is zero; the largest shard must be at least one byte");
        }

        return n <= long.MaxValue / factor
            ? n * factor
            : throw new ArgumentException($"--max-shard-size: '{text}' is too large (at most {long.MaxValue:N0} bytes)");
    }

    private static long WriteShards(SafetensorsWriter writer, string dir, int threads, IProgress<double>? progress, long maxShardSize)
    {
        var shards = writer.Shard(maxShardSize);
        if (shards.Count == 1)
        {
            return writer.Write(Path.Combine(dir, WeightsFileName), threads, progress);
        }

        // Progress over the whole set of shards, by tensor data bytes.
        long total = writer.DataBytes, before = 0, bytes = 0;
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            var shard = shards[i];
            var name = ShardFileName(i + 1, shards.Count);
            long start = before;
            long size = shard.DataBytes;
            var shardProgress = progress is null ? null : new ShardProgress(f => progress.Report(total == 0 ? 1 : (start + (f * size)) / total));
            bytes += shard.Write(Path.Combine(dir, name), threads, shardProgress);
            before += size;
            foreach (var t in shard.TensorNames)
            {
                weightMap.Add(t, name);
            }
        }

        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = total },
            ["weight_map"] = new JsonObject(weightMap.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
        };
        var text = index.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n";
        File.WriteAllText(Path.Combine(dir, HfModelLoader.IndexFileName), text);
        return bytes + text.Length;
    }

    /// <summary>The name of shard <paramref name="number"/> (from 1) of <paramref name="count"/>, as transformers names it.</summary>
    public static string ShardFileName(int number, int count) => $"model-{number:D5}-of-{count:D5}.safetensors";

    /// <summary>The <c>config.json</c> of <paramref name="model"/> with weights of <paramref name="dtype"/>.</summary>
    public static JsonObject ConfigJson(LlamaModel model, string dtype)
    {
        var c = model.Config;
        var w = model.Weights;
        var (className, modelType) = c.Architecture switch
        {
            "llama" => ("LlamaForCausalLM", "llama"),
            "mistral" => ("MistralForCausalLM", "mistral"),
            "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
            var a => throw new ArgumentException($"{model.Path}: architecture '{a}' has no Hugging Face model class kvaq writes (llama, mistral, qwen2)"),
        };
        bool bias = w.Layers.Any(l => l.Bq is not null);
        if (bias && w.Layers.Any(l => l.Bq is null || l.Bk is null || l.Bv is null))
        {
            throw new ArgumentException($"{model.Path}: some blocks have q/k/v biases and some do not; a Hugging Face config cannot say that");
        }

        if (bias && modelType == "mistral")
        {
            throw new ArgumentException($"{model.Path}: a mistral model with q/k/v biases has no Hugging Face config (MistralForCausalLM has no attention biases)");
        }

        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(className),
            ["model_type"] = modelType,
            ["hidden_size"] = c.Dim,
            ["intermediate_size"] = c.HiddenDim,
            ["num_hidden_layers"] = c.Layers,
            ["num_attention_heads"] = c.Heads,
            ["num_key_value_heads"] = c.KvHeads,
            ["head_dim"] = c.HeadDim,
            ["vocab_size"] = c.VocabSize,
            ["max_position_embeddings"] = c.ContextLength,
            ["rms_norm_eps"] = Shortest(c.NormEps),
            ["rope_theta"] = Shortest(c.RopeTheta),
            ["rope_scaling"] = RopeScalingJson(model),
            ["hidden_act"] = "silu",
            ["tie_word_embeddings"] = c.TiedEmbeddings,
            ["bos_token_id"] = c.BosToken,
            ["eos_token_id"] = c.EosToken,
            ["torch_dtype"] = dtype switch { "F16" => "float16", "BF16" => "bfloat16", _ => "float32" },
        };
        switch (modelType)
        {
            case "llama":
                // HF's attention_bias covers o_proj too: it is written as zeros, which adds nothing.
                json["attention_bias"] = bias;
                json["mlp_bias"] = false;
                break;
            case "qwen2":
                if (!bias)
                {
                    throw new ArgumentException($"{model.Path}: a qwen2 model without q/k/v biases has no Hugging Face config (Qwen2ForCausalLM always has them)");
                }

                json["use_sliding_window"] = false;
                break;
        }

        return json;
    }

    private static JsonNode? RopeScalingJson(LlamaModel model)
    {
        var c = model.Config;
        var factors = model.Weights.RopeFrequencyFactors;
        if (factors is null)
        {
            return c.RopeScaling is { } s ? Llama3(s) : null;
        }

        // A GGUF file carries Llama 3 scaling as its per-pair factors only; config.json needs the parameters that give them.
        var candidate = c.RopeScaling ?? new RopeScaling(factors.Max(), 1, 4, 8192);
        var expected = GgufModelExporter.Llama3RopeFactors(c.RopeTheta, c.HeadDim, candidate);
        if (expected.Length != factors.Length || expected.Zip(factors).Any(p => Math.Abs(p.First - p.Second) > 1e-5 * Math.Abs(p.First)))
        {
            throw new ArgumentException($"{model.Path}: rope_freqs.weight holds per-pair RoPE factors that are not Llama 3 scaling with factor {candidate.Factor}, low_freq_factor {candidate.LowFreqFactor}, high_freq_factor {candidate.HighFreqFactor}, original_max_position_embeddings {candidate.OriginalContextLength}; config.json cannot express them");
        }

        return Llama3(candidate);

        static JsonObject Llama3(RopeScaling s) => new()
        {
            ["rope_type"] = "llama3",
            ["factor"] = Shortest(s.Factor),
            ["low_freq_factor"] = Shortest(s.LowFreqFactor),
            ["high_freq_factor"] = Shortest(s.HighFreqFactor),
            ["original_max_position_embeddings"] = s.OriginalContextLength,
        };
    }

    /// <summary>A float as the double of its shortest decimal form (1e-5f as 1e-05, not 9.99999974737875e-06): reads back as the same float.</summary>
    private static double Shortest(float f) => double.Parse(f.ToString("R", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture);

    private static SafetensorsWriter CreateWeights(LlamaModel model, string dtype)
    {
        var c = model.Config;
        var w = model.Weights;
        var qOrder = RopeRowOrder.Between(c.RopeLayout, RopeLayout.HalfSplit, c.Heads, c.HeadDim);
        var kOrder = RopeRowOrder.Between(c.RopeLayout, RopeLayout.HalfSplit, c.KvHeads, c.HeadDim);
        var writer = new SafetensorsWriter();

        void Matrix(string name, WeightMatrix m, int[]? order = null) => writer.Add(name, dtype, [m.Rows, m.Cols], GgufModelExporter.RowsOf(m, order));

        void Vector(string name, float[] v, int[]? order = null) => writer.Add(name, "F32", [v.Length], RopeRowOrder.Apply(v, order));

        Matrix("model.embed_tokens.weight", w.TokenEmbedding);
        bool bias = w.Layers.Any(l => l.Bq is not null);
        for (int i = 0; i < c.Layers; i++)
        {
            var l = w.Layers[i];
            string p = $"model.layers.{i}.";
            Vector(p + "input_layernorm.weight", l.AttentionNorm);
            Matrix(p + "self_attn.q_proj.weight", l.Wq, qOrder);
            Matrix(p + "self_attn.k_proj.weight", l.Wk, kOrder);
            Matrix(p + "self_attn.v_proj.weight", l.Wv);
            Matrix(p + "self_attn.o_proj.weight", l.Wo);
            if (bias)
            {
                Vector(p + "self_attn.q_proj.bias", l.Bq!, qOrder);
                Vector(p + "self_attn.k_proj.bias", l.Bk!, kOrder);
                Vector(p + "self_attn.v_proj.bias", l.Bv!);
                if (c.Architecture == "llama")
                {
                    Vector(p + "self_attn.o_proj.bias", new float[c.Dim]);
                }
            }

            Vector(p + "post_attention_layernorm.weight", l.FfnNorm);
            Matrix(p + "mlp.gate_proj.weight", l.W1);
            Matrix(p + "mlp.up_proj.weight", l.W3);
            Matrix(p + "mlp.down_proj.weight", l.W2);
        }

        Vector("model.norm.weight", w.FinalNorm);
        if (!c.TiedEmbeddings)
        {
            Matrix("lm_head.weight", w.Output);
        }

        return writer;
    }

    /// <summary>Forwards a shard's progress on the calling thread (<see cref="Progress{T}"/> would post it later).</summary>
    private sealed class ShardProgress(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }
}
