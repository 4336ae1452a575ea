using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// Lays out a Llama-family model as llama.cpp expects it in GGUF: <c>{arch}.*</c> hyper-parameters, the
/// tokenizer, and tensors <c>token_embd</c>, <c>blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_q/k/v.bias,
/// attn_output, ffn_norm, ffn_gate, ffn_down, ffn_up}</c>, <c>output_norm</c>, <c>output</c> (left out when
/// tied) and <c>rope_freqs</c> (Llama 3 scaling). Norms, biases and rope factors are always F32; matrices
/// take the requested type, or F32 when their rows are not a whole number of its blocks (llama.cpp's
/// quantizer falls back too, to F16; F32 keeps such tensors exact in both engines).
/// </summary>
public static class GgufModelExporter
{
    /// <summary>Supplies the rows of the model tensor with the given GGUF name and shape.</summary>
    public delegate GgufRowSource TensorSource(string name, long[] shape);

    /// <summary>Builds a writer for <paramref name="config"/> with matrices in <paramref name="type"/>.</summary>
    public static GgufWriter Create(ModelConfig config, GgufVocabulary vocabulary, GgmlType type, TensorSource source, bool qkvBias, float[]? ropeFactors, string name)
        => Create(config, vocabulary.ToMetadata("vocabulary"), type, source, qkvBias, ropeFactors, name);

    /// <summary>
    /// Builds a writer for <paramref name="config"/> (its <see cref="ModelConfig.Architecture"/> names the GGUF architecture)
    /// with matrices in <paramref name="type"/> and the tokenizer keys <paramref name="tokenizer"/>.
    /// </summary>
    public static GgufWriter Create(ModelConfig config, GgufTokenizerMetadata tokenizer, GgmlType type, TensorSource source, bool qkvBias, float[]? ropeFactors, string name)
    {
        if (type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8_0 or GgmlType.Q4_0))
        {
            throw new ArgumentException($"--type: cannot write {type}; use f32, f16, bf16, q8_0 or q4_0");
        }

        if (tokenizer.TokenCount != config.VocabSize)
        {
            throw new ArgumentException($"{tokenizer.Source}: tokenizer has {tokenizer.TokenCount} tokens but the model's vocabulary is {config.VocabSize}");
        }

        var c = config;
        string a = c.Architecture;
        var w = new GgufWriter();
        w.Set("general.architecture", a);
        w.Set("general.name", name);
        w.Set("general.alignment", (uint)w.Alignment);
        w.Set("general.file_type", type switch
        {
            GgmlType.F32 => 0u,
            GgmlType.F16 => 1u,
            GgmlType.Q4_0 => 2u,
            GgmlType.BF16 => 32u, // LLAMA_FTYPE_MOSTLY_BF16
            _ => 7u,
        });
        w.Set($"{a}.context_length", (uint)c.ContextLength);
        w.Set($"{a}.embedding_length", (uint)c.Dim);
        w.Set($"{a}.block_count", (uint)c.Layers);
        w.Set($"{a}.feed_forward_length", (uint)c.HiddenDim);
        w.Set($"{a}.attention.head_count", (uint)c.Heads);
        w.Set($"{a}.attention.head_count_kv", (uint)c.KvHeads);
        w.Set($"{a}.attention.key_length", (uint)c.HeadDim);
        w.Set($"{a}.attention.value_length", (uint)c.HeadDim);
        w.Set($"{a}.attention.layer_norm_rms_epsilon", c.NormEps);
        w.Set($"{a}.rope.freq_base", c.RopeTheta);
        w.Set($"{a}.rope.dimension_count", (uint)c.HeadDim);
        w.Set($"{a}.vocab_size", (uint)c.VocabSize);
        tokenizer.WriteTo(w);

        long dim = c.Dim, qd = c.QDim, kvd = c.KvDim, hid = c.HiddenDim, vocab = c.VocabSize;
        void Matrix(string n, long cols, long rows)
        {
            var geo = GgmlTypeInfo.Geometry(type)!.Value;
            var t = cols % geo.BlockElements == 0 ? type : GgmlType.F32;
            long[] shape = [cols, rows];
            w.AddTensor(n, t, shape, source(n, shape));
        }

        void Vector(string n, long length)
        {
            long[] shape = [length];
            w.AddTensor(n, GgmlType.F32, shape, source(n, shape));
        }

        Matrix("token_embd.weight", dim, vocab);
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"blk.{l}.";
            Vector(p + "attn_norm.weight", dim);
            Matrix(p + "attn_q.weight", dim, qd);
            Matrix(p + "attn_k.weight", dim, kvd);
            Matrix(p + "attn_v.weight", dim, kvd);
            if (qkvBias)
            {
                Vector(p + "attn_q.bias", qd);
                Vector(p + "attn_k.bias", kvd);
                Vector(p + "attn_v.bias", kvd);
            }

            Matrix(p + "attn_output.weight", qd, dim);
            Vector(p + "ffn_norm.weight", dim);
            Matrix(p + "ffn_gate.weight", dim, hid);
            Matrix(p + "ffn_down.weight", hid, dim);
            Matrix(p + "ffn_up.weight", dim, hid);
        }

        Vector("output_norm.weight", dim);
        if (!c.TiedEmbeddings)
        {
            Matrix("output.weight", dim, vocab);
        }

        var factors = ropeFactors ?? (c.RopeScaling is { } s ? Llama3RopeFactors(c.RopeTheta, c.HeadDim, s) : null);
        if (factors is not null)
        {
            if (factors.Length != c.HeadDim / 2)
            {
                throw new ArgumentException($"rope factors: {factors.Length} values, expected head_dim / 2 = {c.HeadDim / 2}");
            }

            w.AddTensor("rope_freqs.weight", GgmlType.F32, [factors.Length], (_, _, dst) => factors.AsSpan().CopyTo(dst));
        }

        return w;
    }

    /// <summary>Builds a writer that re-encodes a loaded model (any format) with matrices in <paramref name="type"/>.</summary>
    public static GgufWriter FromModel(LlamaModel model, GgufVocabulary vocabulary, GgmlType type, string name)
        => FromModel(model, vocabulary.ToMetadata("vocabulary"), type, name);

    /// <summary>
    /// Builds a writer that re-encodes a loaded model (any format) with matrices in <paramref name="type"/> as GGUF
    /// architecture <paramref name="architecture"/> (default: the model's own). When the model's RoPE layout differs
    /// from the one llama.cpp uses for that architecture (a Hugging Face checkpoint, half-split, written as <c>llama</c>,
    /// interleaved), the rows of Q and K and their biases are reordered head by head (<see cref="RopeRowOrder"/>), as
    /// llama.cpp's convert_hf_to_gguf permutes them.
    /// </summary>
    public static GgufWriter FromModel(LlamaModel model, GgufTokenizerMetadata tokenizer, GgmlType type, string name, string? architecture = null)
    {
        var c = model.Config;
        var arch = architecture ?? c.Architecture;
        if (!GgufModelLoader.Architectures.Contains(arch))
        {
            throw new ArgumentException($"GGUF architecture '{arch}' is not one kvaq writes ({string.Join(", ", GgufModelLoader.Architectures)})");
        }

        var target = GgufModelLoader.RopeLayoutOf(arch);
        var q = RopeRowOrder.Between(c.RopeLayout, target, c.Heads, c.HeadDim);
        var k = RopeRowOrder.Between(c.RopeLayout, target, c.KvHeads, c.HeadDim);
        var w = model.Weights;
        bool bias = w.Layers.Any(l => l.Bq is not null);
        return Create(c with { Architecture = arch, RopeLayout = target }, tokenizer, type, (n, shape) => SourceOf(w, n, shape, q, k), bias, w.RopeFrequencyFactors, name);
    }

    /// <summary>
    /// The per-pair frequency divisors of Llama 3 rope scaling, computed as llama.cpp's convert_hf_to_gguf.py
    /// does for <c>rope_freqs.weight</c>: 1 for short wavelengths, <c>factor</c> for long ones, smooth between.
    /// </summary>
    public static float[] Llama3RopeFactors(float theta, int headDim, RopeScaling s)
    {
        var f = new float[headDim / 2];
        double lowWavelen = s.OriginalContextLength / s.LowFreqFactor;
        double highWavelen = s.OriginalContextLength / s.HighFreqFactor;
        for (int i = 0; i < f.Length; i++)
        {
            float freq = 1f / MathF.Pow(theta, 2f * i / headDim);
            double wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen)
            {
                f[i] = 1f;
            }
            else if (wavelen > lowWavelen)
            {
                f[i] = s.Factor;
            }
            else
            {
                double smooth = ((s.OriginalContextLength / wavelen) - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                f[i] = (float)(1 / (((1 - smooth) / s.Factor) + smooth));
            }
        }

        return f;
    }

    /// <summary>
    /// The rows of <paramref name="m"/>, dequantized, as a row source; with <paramref name="order"/>, destination row r is
    /// source row <c>order[r]</c> (see <see cref="RopeRowOrder"/>).
    /// </summary>
    public static GgufRowSource RowsOf(WeightMatrix m, int[]? order = null) => (first, count, dst) =>
    {
        for (int r = 0; r < count; r++)
        {
            int row = (int)first + r;
            m.DequantizeRow(order?[row] ?? row, dst.Slice(r * m.Cols, m.Cols));
        }
    };

    private static GgufRowSource SourceOf(ModelWeights w, string name, long[] shape, int[]? qOrder, int[]? kOrder)
    {
        GgufRowSource FromMatrix(WeightMatrix m, int[]? order = null)
        {
            if (m.Cols != shape[0] || m.Rows != shape[1])
            {
                throw new InvalidOperationException($"{name}: matrix {m.Name} is [{m.Rows}, {m.Cols}], expected [{shape[1]}, {shape[0]}]");
            }

            return RowsOf(m, order);
        }

        static GgufRowSource FromVector(float[] v, int[]? order = null)
        {
            var values = RopeRowOrder.Apply(v, order);
            return (first, count, dst) => values.AsSpan().CopyTo(dst);
        }

        if (name == "token_embd.weight")
        {
            return FromMatrix(w.TokenEmbedding);
        }

        if (name == "output.weight")
        {
            return FromMatrix(w.Output);
        }

        if (name == "output_norm.weight")
        {
            return FromVector(w.FinalNorm);
        }

        var parts = name.Split('.');
        var l = w.Layers[int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture)];
        return (parts[2], parts[3]) switch
        {
            ("attn_norm", _) => FromVector(l.AttentionNorm),
            ("ffn_norm", _) => FromVector(l.FfnNorm),
            ("attn_q", "weight") => FromMatrix(l.Wq, qOrder),
            ("attn_k", "weight") => FromMatrix(l.Wk, kOrder),
            ("attn_v", "weight") => FromMatrix(l.Wv),
            ("attn_q", "bias") => FromVector(l.Bq!, qOrder),
            ("attn_k", "bias") => FromVector(l.Bk!, kOrder),
            ("attn_v", "bias") => FromVector(l.Bv!),
            ("attn_output", _) => FromMatrix(l.Wo),
            ("ffn_gate", _) => FromMatrix(l.W1),
            ("ffn_down", _) => FromMatrix(l.W2),
            ("ffn_up", _) => FromMatrix(l.W3),
            _ => throw new InvalidOperationException($"no source for tensor {name}"),
        };
    }
}
