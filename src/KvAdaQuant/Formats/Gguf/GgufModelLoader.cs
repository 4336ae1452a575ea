using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// Builds a <see cref="ModelConfig"/> and <see cref="ModelWeights"/> from a GGUF file of architecture
/// <c>llama</c> (Llama 2/3/3.1/3.2, SmolLM, TinyLlama), <c>mistral</c> or <c>qwen2</c>. Matrices stay in the
/// file's memory mapping (any type <see cref="RowDequantizer"/> reads); norms and biases are copied to float
/// arrays. <c>llama</c>/<c>mistral</c> use llama.cpp's rope type NORM (interleaved pairs: HF conversion
/// permutes Q/K for it), <c>qwen2</c> rope type NEOX (half-split). Every tensor's presence, type and shape is
/// checked against the metadata, a tensor the model does not read is refused, and errors name the file, the tensor or key, what was expected and what was found.
/// </summary>
public static unsafe class GgufModelLoader
{
    /// <summary>Architectures this loader understands.</summary>
    public static IReadOnlyList<string> Architectures { get; } = ["llama", "mistral", "qwen2"];

    /// <summary>
    /// The RoPE layout llama.cpp uses for GGUF architecture <paramref name="architecture"/>: half-split (rope type NEOX)
    /// for <c>qwen2</c>, interleaved (NORM) for <c>llama</c> and <c>mistral</c>.
    /// </summary>
    public static RopeLayout RopeLayoutOf(string architecture) => architecture == "qwen2" ? RopeLayout.HalfSplit : RopeLayout.Interleaved;

    /// <summary>Loads the model in <paramref name="file"/>; the returned weights own (and dispose) the file.</summary>
    public static (ModelConfig Config, ModelWeights Weights) Load(GgufFile file)
    {
        var config = ReadConfig(file);
        var weights = ReadWeights(file, config);
        return (config, weights);
    }

    /// <summary>Reads the hyper-parameters from the metadata (vocabulary size from <c>token_embd.weight</c>).</summary>
    public static ModelConfig ReadConfig(GgufFile g)
    {
        string path = g.Path;
        var arch = g.GetString("general.architecture") ?? throw new ModelFormatException(path, g.Get("general.architecture") is { } other
            ? $"metadata 'general.architecture' should be a string but is {other.GetType().Name}"
            : "metadata 'general.architecture' is missing");
        if (!Architectures.Contains(arch))
        {
            throw new ModelFormatException(path, $"architecture '{arch}' is not supported (supported: {string.Join(", ", Architectures)})");
        }

        int Required(string key) => Int(g, $"{arch}.{key}") ?? throw new ModelFormatException(path, $"metadata '{arch}.{key}' is missing");

        int dim = Required("embedding_length");
        int heads = Required("attention.head_count");
        int kvHeads = Int(g, $"{arch}.attention.head_count_kv") ?? heads;
        if (heads <= 0 || dim <= 0)
        {
            throw new ModelFormatException(path, $"metadata: embedding_length {dim} and attention.head_count {heads} must be positive");
        }

        int headDim = Int(g, $"{arch}.attention.key_length") ?? (dim / heads);
        if (Int(g, $"{arch}.attention.value_length") is { } vl && vl != headDim)
        {
            throw new ModelFormatException(path, $"metadata: attention.value_length {vl} differs from key_length {headDim}; not supported");
        }

        if (Int(g, $"{arch}.rope.dimension_count") is { } rd && rd != headDim)
        {
            throw new ModelFormatException(path, $"metadata: rope.dimension_count {rd} differs from the head size {headDim}; partial RoPE is not supported");
        }

        var embd = g.FindTensor("token_embd.weight") ?? throw new ModelFormatException(path, "tensor 'token_embd.weight' is missing");
        if (embd.Shape.Length != 2 || embd.Shape[0] != dim)
        {
            throw new ModelFormatException(path, $"tensor 'token_embd.weight' has shape [{string.Join(", ", embd.Shape)}], expected [{dim}, vocab] from {arch}.embedding_length");
        }

        int vocab = checked((int)Math.Min(embd.Shape[1], int.MaxValue));
        if (g.Get("tokenizer.ggml.tokens") is Array tokens && tokens.Length != vocab)
        {
            throw new ModelFormatException(path, $"tokenizer.ggml.tokens holds {tokens.Length} tokens but token_embd.weight has {vocab} rows: tokenizer and model vocabularies disagree");
        }

        if (Int(g, $"{arch}.vocab_size") is { } vs && vs != vocab)
        {
            throw new ModelFormatException(path, $"metadata {arch}.vocab_size is {vs} but token_embd.weight has {vocab} rows");
        }

        RopeScaling? scaling = null;
        var scalingType = g.GetString($"{arch}.rope.scaling.type");
        if (scalingType is not (null or "none"))
        {
            if (scalingType != "llama3")
            {
                throw new ModelFormatException(path, $"metadata {arch}.rope.scaling.type '{scalingType}' is not supported (none, llama3, or a rope_freqs.weight tensor)");
            }

            scaling = new RopeScaling(
                (float)(g.GetFloat($"{arch}.rope.scaling.factor") ?? 8.0),
                (float)(g.GetFloat($"{arch}.rope.scaling.low_freq_factor") ?? 1.0),
                (float)(g.GetFloat($"{arch}.rope.scaling.high_freq_factor") ?? 4.0),
                Int(g, $"{arch}.rope.scaling.original_context_length") ?? 8192);
        }

        var cfg = new ModelConfig
        {
            Architecture = arch,
            Dim = dim,
            HiddenDim = Required("feed_forward_length"),
            Layers = Required("block_count"),
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = vocab,
            ContextLength = Required("context_length"),
            NormEps = (float)(g.GetFloat($"{arch}.attention.layer_norm_rms_epsilon") ?? 1e-5),
            RopeTheta = (float)(g.GetFloat($"{arch}.rope.freq_base") ?? 10000.0),
            RopeLayout = RopeLayoutOf(arch),
            RopeScaling = scaling,
            TiedEmbeddings = g.FindTensor("output.weight") is null,
            BosToken = Int(g, "tokenizer.ggml.bos_token_id") ?? 1,
            EosToken = Int(g, "tokenizer.ggml.eos_token_id") ?? 2,
        };
        cfg.Validate(path);
        if ((uint)cfg.BosToken >= (uint)vocab || (uint)cfg.EosToken >= (uint)vocab)
        {
            throw new ModelFormatException(path, $"tokenizer.ggml.bos_token_id {cfg.BosToken} / eos_token_id {cfg.EosToken} lie outside the vocabulary of {vocab}");
        }

        return cfg;
    }

    private static int? Int(GgufFile g, string key)
    {
        long? v = g.GetInteger(key);
        if (v is null)
        {
            return null;
        }

        if (v < int.MinValue || v > int.MaxValue)
        {
            throw new ModelFormatException(g.Path, $"metadata '{key}' = {v} is out of range");
        }

        return (int)v;
    }

    /// <summary>
    /// Refuses tensors the model does not read, as llama.cpp does ("wrong number of tensors"): a block beyond
    /// <c>{arch}.block_count</c> means the metadata lost layers, any other leftover (an MoE router, a tensor of another
    /// architecture) a model this engine would run wrongly while ignoring it.
    /// </summary>
    private static void RejectUnusedTensors(GgufFile g, ModelConfig c, HashSet<string> used)
    {
        foreach (var t in g.Tensors)
        {
            if (used.Contains(t.Name))
            {
                continue;
            }

            if (BlockIndex(t.Name) is { } block && block >= c.Layers)
            {
                throw new ModelFormatException(g.Path, $"tensor '{t.Name}' belongs to block {block}, but {c.Architecture}.block_count is {c.Layers} (blocks 0..{c.Layers - 1}); the metadata and the tensors disagree");
            }

            throw new ModelFormatException(g.Path, $"tensor '{t.Name}' is not one that architecture {c.Architecture} reads ({g.Tensors.Count} tensors in the file, {used.Count} used); unused tensors are refused, as llama.cpp refuses them");
        }
    }

    /// <summary>N of a tensor named <c>blk.N.*</c>, or null.</summary>
    private static long? BlockIndex(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal))
        {
            return null;
        }

        int end = name.IndexOf('.', 4);
        return end > 4 && long.TryParse(name.AsSpan(4, end - 4), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long n) ? n : null;
    }

    private static ModelWeights ReadWeights(GgufFile g, ModelConfig c)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        GgufTensorInfo Find(string name, params long[] shape)
        {
            var t = g.FindTensor(name) ?? throw new ModelFormatException(g.Path, $"tensor '{name}' is missing");
            used.Add(name);
            if (!t.Shape.SequenceEqual(shape))
            {
                throw new ModelFormatException(g.Path, $"tensor '{name}' has shape [{string.Join(", ", t.Shape)}] but the metadata implies [{string.Join(", ", shape)}]");
            }

            if (!RowDequantizer.Supports(t.Type))
            {
                throw new ModelFormatException(g.Path, $"tensor '{name}' has type {t.Type}, which this engine cannot read");
            }

            return t;
        }

        WeightMatrix Mat(string name, long cols, long rows)
        {
            var t = Find(name, cols, rows);
            return new WeightMatrix(name, t.Type, (int)rows, (int)cols, g.TensorData(t)) { IsFileMapped = true };
        }

        float[] Vec(string name, long length)
        {
            var t = Find(name, length);
            var v = new float[length];
            RowDequantizer.Dequantize(t.Type, new ReadOnlySpan<byte>(g.TensorData(t), checked((int)t.ByteSize)), v);
            return v;
        }

        float[]? OptionalVec(string name, long length) => g.FindTensor(name) is null ? null : Vec(name, length);

        long d = c.Dim, qd = c.QDim, kvd = c.KvDim, h = c.HiddenDim, v = c.VocabSize;
        var emb = Mat("token_embd.weight", d, v);
        var layers = new LayerWeights[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"blk.{l}.";
            layers[l] = new LayerWeights
            {
                AttentionNorm = Vec(p + "attn_norm.weight", d),
                Wq = Mat(p + "attn_q.weight", d, qd),
                Wk = Mat(p + "attn_k.weight", d, kvd),
                Wv = Mat(p + "attn_v.weight", d, kvd),
                Bq = OptionalVec(p + "attn_q.bias", qd),
                Bk = OptionalVec(p + "attn_k.bias", kvd),
                Bv = OptionalVec(p + "attn_v.bias", kvd),
                Wo = Mat(p + "attn_output.weight", qd, d),
                FfnNorm = Vec(p + "ffn_norm.weight", d),
                W1 = Mat(p + "ffn_gate.weight", d, h),
                W2 = Mat(p + "ffn_down.weight", h, d),
                W3 = Mat(p + "ffn_up.weight", d, h),
            };
        }

        if (c.Architecture == "qwen2" && layers.Any(l => l.Bq is null || l.Bk is null || l.Bv is null))
        {
            throw new ModelFormatException(g.Path, "architecture qwen2 needs attn_q.bias, attn_k.bias and attn_v.bias in every block; some are missing");
        }

        var finalNorm = Vec("output_norm.weight", d);
        var output = c.TiedEmbeddings ? emb : Mat("output.weight", d, v);
        var ropeFactors = OptionalVec("rope_freqs.weight", c.HeadDim / 2);
        if (ropeFactors is not null && Array.FindIndex(ropeFactors, f => !(float.IsFinite(f) && f > 0)) is var bad and >= 0)
        {
            // Positions are divided by these: a 0, an infinity or a NaN makes every rotated key NaN.
            throw new ModelFormatException(g.Path, $"tensor 'rope_freqs.weight': element {bad} is {ropeFactors[bad]}, but RoPE frequency factors must be positive and finite");
        }

        RejectUnusedTensors(g, c, used);
        return new ModelWeights(emb, layers, finalNorm, output, [g]) { RopeFrequencyFactors = ropeFactors };
    }
}
