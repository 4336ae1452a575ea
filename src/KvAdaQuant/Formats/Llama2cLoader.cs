using System.Buffers.Binary;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats;

/// <summary>
/// Loads llama2.c checkpoints: the legacy fp32 layout (7 int32 header, then tensors) and the int8
/// "version 2" export (magic "ak42", 256-byte header, fp32 norms, int8 weights with an fp32 scale per group).
/// Int8 weights are dequantized to fp32 at load time, so activations stay in float (unlike llama2.c's runq.c).
/// </summary>
public static unsafe class Llama2cLoader
{
    /// <summary>Magic of the version-2 export, read as a little-endian uint32.</summary>
    public const uint Q80Magic = 0x616b3432;

    /// <summary>True when the file starts like an int8 version-2 export.</summary>
    public static bool IsQ80(ReadOnlySpan<byte> head) => head.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(head) == Q80Magic;

    /// <summary>Loads the checkpoint at <paramref name="path"/>.</summary>
    public static (ModelConfig Config, ModelWeights Weights, string Format) Load(string path)
    {
        var file = new MappedFile(path);
        try
        {
            return IsQ80(file.Span(0, Math.Min(4, (int)file.Length))) ? LoadQ80(file) : LoadFp32(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static ModelConfig ReadConfig(string path, ReadOnlySpan<byte> h, bool q80, out bool shared)
    {
        var ints = new int[7];
        for (int i = 0; i < 7; i++)
        {
            ints[i] = BinaryPrimitives.ReadInt32LittleEndian(h[(i * 4)..]);
        }

        int dim = ints[0], hidden = ints[1], layers = ints[2], heads = ints[3], kvHeads = ints[4], vocab = ints[5], seq = ints[6];
        shared = vocab > 0;
        if (!q80)
        {
            // A negative vocab_size means an untied classifier; int.MinValue has no positive counterpart (Math.Abs throws).
            vocab = vocab == int.MinValue ? int.MaxValue : Math.Abs(vocab);
        }

        try
        {
            if (heads <= 0 || dim <= 0 || dim % heads != 0)
            {
                throw new ModelFormatException(path, $"dim {dim} is not a positive multiple of n_heads {heads}");
            }

            var cfg = new ModelConfig
            {
                Dim = dim,
                HiddenDim = hidden,
                Layers = layers,
                Heads = heads,
                KvHeads = kvHeads,
                HeadDim = dim / heads,
                VocabSize = vocab,
                ContextLength = seq,
                TiedEmbeddings = shared,
                RopeLayout = RopeLayout.Interleaved,
            };
            cfg.Validate(path);
            return cfg;
        }
        catch (ModelFormatException e) when (!q80)
        {
            // The legacy layout has no magic: any file that is not GGUF lands here, a text file or an image included.
            throw new ModelFormatException(path, $"not a GGUF file (no GGUF magic) nor a llama2.c fp32 checkpoint (a header of 7 int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len): {e.Problem}");
        }
    }

    private static (ModelConfig, ModelWeights, string) LoadFp32(MappedFile file)
    {
        const int headerBytes = 28;
        var cfg = ReadConfig(file.Path, file.Span(0, headerBytes), false, out bool shared);
        long d = cfg.Dim, h = cfg.HiddenDim, l = cfg.Layers, kv = cfg.KvDim, q = cfg.QDim, vsz = cfg.VocabSize;
        long expected = headerBytes + Fp32TensorBytes(cfg);
        if (file.Length != expected)
        {
            throw new ModelFormatException(file.Path, $"llama2.c fp32 header (dim {cfg.Dim}, hidden {cfg.HiddenDim}, layers {cfg.Layers}, heads {cfg.Heads}/{cfg.KvHeads}, vocab {cfg.VocabSize}, seq {cfg.ContextLength}) implies {expected} bytes but the file has {file.Length}");
        }

        long off = headerBytes;
        byte* basePtr = file.Pointer;
        WeightMatrix Mat(string name, long rows, long cols)
        {
            var m = new WeightMatrix(name, GgmlType.F32, (int)rows, (int)cols, basePtr + off);
            off += rows * cols * 4;
            return m;
        }

        float[] Vec(long n)
        {
            var v = new float[n];
            new ReadOnlySpan<float>(basePtr + off, (int)n).CopyTo(v);
            off += n * 4;
            return v;
        }

        var emb = Mat("token_embedding_table", vsz, d);
        var attNorm = Enumerable.Range(0, (int)l).Select(_ => Vec(d)).ToArray();
        var wq = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wq", q, d)).ToArray();
        var wk = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wk", kv, d)).ToArray();
        var wv = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wv", kv, d)).ToArray();
        var wo = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wo", d, q)).ToArray();
        var ffnNorm = Enumerable.Range(0, (int)l).Select(_ => Vec(d)).ToArray();
        var w1 = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.w1", h, d)).ToArray();
        var w2 = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.w2", d, h)).ToArray();
        var w3 = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.w3", h, d)).ToArray();
        var finalNorm = Vec(d);
        off += cfg.ContextLength * (long)cfg.HeadDim * 4; // freq_cis_real and freq_cis_imag (unused: RoPE is computed)
        var output = shared ? emb : Mat("wcls", vsz, d);
        var layers = Zip(attNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3);
        return (cfg, new ModelWeights(emb, layers, finalNorm, output, [file]), "llama2c-fp32");
    }

    /// <summary>
    /// Bytes after the 28-byte header of a legacy fp32 checkpoint of <paramref name="cfg"/>: every tensor, the freq_cis
    /// tables (seq_len x head_size floats) and the classifier unless tied.
    /// </summary>
    internal static long Fp32TensorBytes(ModelConfig cfg)
    {
        long d = cfg.Dim, h = cfg.HiddenDim, l = cfg.Layers, kv = cfg.KvDim, q = cfg.QDim, vsz = cfg.VocabSize;
        long floats = (vsz * d) + (l * d) + (l * d * q) + (2 * l * d * kv) + (l * q * d) + (l * d) + (3 * l * d * h) + d
            + (cfg.ContextLength * (long)cfg.HeadDim) + (cfg.TiedEmbeddings ? 0 : vsz * d);
        return floats * 4;
    }

    private static (ModelConfig, ModelWeights, string) LoadQ80(MappedFile file)
    {
        const int headerBytes = 256;
        var head = file.Span(0, headerBytes);
        int version = BinaryPrimitives.ReadInt32LittleEndian(head[4..]);
        if (version != 2)
        {
            throw new ModelFormatException(file.Path, $"llama2.c export version {version} is not supported (expected 2, int8 Q8_0 groups)");
        }

        var cfg = ReadConfig(file.Path, head[8..36], true, out _);
        bool shared = head[36] != 0;
        cfg = cfg with { TiedEmbeddings = shared };
        int gs = BinaryPrimitives.ReadInt32LittleEndian(head[37..]);
        long d = cfg.Dim, h = cfg.HiddenDim, l = cfg.Layers, kv = cfg.KvDim, q = cfg.QDim, vsz = cfg.VocabSize;
        if (gs <= 0 || d % gs != 0 || h % gs != 0)
        {
            throw new ModelFormatException(file.Path, $"header: group size {gs} must be positive and divide dim {d} and hidden_dim {h}");
        }

        long QBytes(long n) => n + (n / gs * 4);
        long expected = headerBytes + (((2 * l * d) + d) * 4) + QBytes(vsz * d) + (l * (QBytes(q * d) + (2 * QBytes(kv * d)) + QBytes(d * q)
            + (3 * QBytes(h * d)))) + (shared ? 0 : QBytes(vsz * d));
        if (file.Length != expected)
        {
            throw new ModelFormatException(file.Path, $"llama2.c int8 v2 header (dim {d}, hidden {h}, layers {l}, heads {cfg.Heads}/{cfg.KvHeads}, vocab {vsz}, group {gs}) implies {expected} bytes but the file has {file.Length}");
        }

        long off = headerBytes;
        byte* p = file.Pointer;
        var owned = new List<IDisposable>();
        float[] Vec(long n)
        {
            var v = new float[n];
            new ReadOnlySpan<float>(p + off, (int)n).CopyTo(v);
            off += n * 4;
            return v;
        }

        WeightMatrix Mat(string name, long rows, long cols)
        {
            long n = rows * cols;
            var buf = new NativeBuffer(n * 4);
            owned.Add(buf);
            var qv = new ReadOnlySpan<sbyte>(p + off, (int)n);
            var sc = new ReadOnlySpan<float>(p + off + n, (int)(n / gs));
            var dst = new Span<float>(buf.Pointer, (int)n);
            for (long i = 0; i < n; i++)
            {
                dst[(int)i] = qv[(int)i] * sc[(int)(i / gs)];
            }

            off += QBytes(n);
            return new WeightMatrix(name, GgmlType.F32, (int)rows, (int)cols, buf.Pointer);
        }

        var attNorm = Enumerable.Range(0, (int)l).Select(_ => Vec(d)).ToArray();
        var ffnNorm = Enumerable.Range(0, (int)l).Select(_ => Vec(d)).ToArray();
        var finalNorm = Vec(d);
        var emb = Mat("tok_embeddings", vsz, d);
        var wq = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wq", q, d)).ToArray();
        var wk = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wk", kv, d)).ToArray();
        var wv = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wv", kv, d)).ToArray();
        var wo = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.wo", d, q)).ToArray();
        var w1 = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.w1", h, d)).ToArray();
        var w2 = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.w2", d, h)).ToArray();
        var w3 = Enumerable.Range(0, (int)l).Select(i => Mat($"layers.{i}.w3", h, d)).ToArray();
        var output = shared ? emb : Mat("output", vsz, d);
        file.Dispose();
        var layers = Zip(attNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3);
        return (cfg, new ModelWeights(emb, layers, finalNorm, output, owned), "llama2c-q80");
    }

    // The per-layer arrays (each file format reads them in its own order) as one LayerWeights per layer.
    private static LayerWeights[] Zip(
        float[][] attNorm, WeightMatrix[] wq, WeightMatrix[] wk, WeightMatrix[] wv, WeightMatrix[] wo, float[][] ffnNorm, WeightMatrix[] w1, WeightMatrix[] w2, WeightMatrix[] w3) =>
        Enumerable.Range(0, attNorm.Length).Select(i => new LayerWeights
        {
            AttentionNorm = attNorm[i],
            Wq = wq[i],
            Wk = wk[i],
            Wv = wv[i],
            Wo = wo[i],
            FfnNorm = ffnNorm[i],
            W1 = w1[i],
            W2 = w2[i],
            W3 = w3[i],
        }).ToArray();
}
