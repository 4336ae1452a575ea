using System.Buffers.Binary;
using System.Text;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Formats.Safetensors;
using KvAdaQuant.Model;

namespace KvAdaQuant.Formats;

/// <summary>
/// Writes a loaded model (any format) as a legacy llama2.c fp32 checkpoint, the layout <see cref="Llama2cLoader"/> and
/// llama2.c's <c>run.c</c> read (llama2.c's <c>export.py</c> <c>legacy_export</c>): a header of 7 int32 (dim, hidden_dim,
/// n_layers, n_heads, n_kv_heads, vocab_size, negative when the classifier is not the token embedding, seq_len), then fp32
/// tensors: the token embedding, every layer's attention RMSNorm, wq, wk, wv, wo, FFN RMSNorm, w1, w2, w3 (each tensor
/// for all layers before the next), the final RMSNorm, the legacy <c>freq_cis_real</c> and <c>freq_cis_imag</c> tables
/// (seq_len x head_size/2 each, which the readers skip; written as export.py computes them) and the classifier when it is
/// not shared. Q and K rows are put in llama2.c's interleaved RoPE order (<see cref="RopeRowOrder"/>); quantized weights are
/// dequantized. The tokenizer goes to a llama2.c <c>tokenizer.bin</c> (<see cref="TokenizerBytes"/>).
/// </summary>
public static class Llama2cExporter
{
    /// <summary>The only RoPE base llama2.c computes with.</summary>
    public const float RopeTheta = 10000f;

    /// <summary>The only RMSNorm epsilon llama2.c uses.</summary>
    public const float NormEps = 1e-5f;

    private const string SpaceMarker = "\u2581";

    /// <summary>
    /// The name of the tokenizer written beside a checkpoint of <paramref name="vocab"/> tokens: <c>tok{vocab}.bin</c>, as the
    /// llama2.c models ship it and the first name <see cref="ModelLoader.FindLlama2cTokenizer"/> looks for.
    /// </summary>
    public static string TokenizerFileName(int vocab) => $"tok{vocab}.bin";

    /// <summary>
    /// Throws <see cref="ArgumentException"/> naming the property and its value when <paramref name="config"/> and
    /// <paramref name="weights"/> describe something a llama2.c checkpoint cannot hold: a RoPE base other than 10000, an
    /// RMSNorm epsilon other than 1e-5, RoPE scaling, q/k/v biases, a head size other than dim / n_heads, BOS/EOS ids other
    /// than 1 and 2 (llama2.c's run.c fixes them), or sizes beyond int32.
    /// </summary>
    public static void CheckRepresentable(ModelConfig config, ModelWeights weights, string source)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        var c = config;
        string Refuse(string what) => $"{source}: {what}; a llama2.c checkpoint cannot represent it (write GGUF or a Hugging Face folder instead)";
        if (c.RopeTheta != RopeTheta)
        {
            throw new ArgumentException(Refuse($"RoPE theta is {c.RopeTheta.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}, and llama2.c computes RoPE with theta 10000"));
        }

        if (c.NormEps != NormEps)
        {
            throw new ArgumentException(Refuse($"RMSNorm epsilon is {c.NormEps.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}, and llama2.c uses 1e-5"));
        }

        if (c.RopeScaling is { } s)
        {
            throw new ArgumentException(Refuse($"RoPE scaling is Llama 3 with factor {s.Factor}, which llama2.c does not apply"));
        }

        if (weights.RopeFrequencyFactors is not null)
        {
            throw new ArgumentException(Refuse("RoPE frequency factors (rope_freqs.weight) are present, which llama2.c does not apply"));
        }

        if (weights.Layers.Any(l => l.Bq is not null || l.Bk is not null || l.Bv is not null))
        {
            throw new ArgumentException(Refuse($"q/k/v projections have biases (architecture {c.Architecture}), and llama2.c's layers have none"));
        }

        if (c.Heads <= 0 || c.Dim % c.Heads != 0 || c.HeadDim != c.Dim / c.Heads)
        {
            throw new ArgumentException(Refuse($"head size is {c.HeadDim} with {c.Heads} heads and dim {c.Dim}, and llama2.c's head size is dim / n_heads"));
        }

        if (c.BosToken != 1 || c.EosToken != 2)
        {
            throw new ArgumentException(Refuse($"BOS / EOS token ids are {c.BosToken} / {c.EosToken}, and llama2.c's run.c fixes them at 1 / 2"));
        }

        if ((long)c.ContextLength * c.HeadDim > int.MaxValue)
        {
            throw new ArgumentException(Refuse($"seq_len {c.ContextLength} is too large for the freq_cis tables"));
        }
    }

    /// <summary>
    /// Writes <paramref name="model"/> as a llama2.c fp32 checkpoint at <paramref name="path"/> (replacing a file there) with
    /// <paramref name="threads"/> threads (0 = all cores); returns the file size. Checks <see cref="CheckRepresentable"/> first.
    /// </summary>
    public static long Write(LlamaModel model, string path, int threads = 0, IProgress<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        var w = model.Weights;
        CheckRepresentable(c, w, model.Path);
        var qOrder = RopeRowOrder.Between(c.RopeLayout, RopeLayout.Interleaved, c.Heads, c.HeadDim);
        var kOrder = RopeRowOrder.Between(c.RopeLayout, RopeLayout.Interleaved, c.KvHeads, c.HeadDim);
        long total = Llama2cLoader.Fp32TensorBytes(c); // what the loader will expect
        long done = 0;
        void Report(long bytes)
        {
            done += bytes;
            progress?.Report(total == 0 ? 1 : (double)done / total);
        }

        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> header = stackalloc byte[28];
        int[] fields = [c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.TiedEmbeddings ? c.VocabSize : -c.VocabSize, c.ContextLength];
        for (int i = 0; i < fields.Length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(header[(i * 4)..], fields[i]);
        }

        fs.Write(header);
        var streamer = new RowStreamer(threads > 0 ? threads : Environment.ProcessorCount);
        void Matrix(Numerics.WeightMatrix m, int[]? order = null)
            => streamer.Write(fs, m.Rows, m.Cols, (long)m.Cols * sizeof(float), GgufModelExporter.RowsOf(m, order), (values, bytes) => SafetensorsWriter.Convert("F32", values, bytes), Report);

        void Vector(float[] v)
        {
            var bytes = new byte[v.Length * sizeof(float)];
            SafetensorsWriter.Convert("F32", v, bytes);
            fs.Write(bytes);
            Report(bytes.Length);
        }

        Matrix(w.TokenEmbedding);
        foreach (var l in w.Layers)
        {
            Vector(l.AttentionNorm);
        }

        foreach (var l in w.Layers)
        {
            Matrix(l.Wq, qOrder);
        }

        foreach (var l in w.Layers)
        {
            Matrix(l.Wk, kOrder);
        }

        foreach (var l in w.Layers)
        {
            Matrix(l.Wv);
        }

        foreach (var l in w.Layers)
        {
            Matrix(l.Wo);
        }

        foreach (var l in w.Layers)
        {
            Vector(l.FfnNorm);
        }

        foreach (var l in w.Layers)
        {
            Matrix(l.W1);
        }

        foreach (var l in w.Layers)
        {
            Matrix(l.W2);
        }

        foreach (var l in w.Layers)
        {
            Matrix(l.W3);
        }

        Vector(w.FinalNorm);
        var (cos, sin) = FreqCis(c.HeadDim, c.ContextLength);
        Vector(cos);
        Vector(sin);
        if (!c.TiedEmbeddings)
        {
            Matrix(w.Output);
        }

        long expected = 28 + total;
        if (fs.Length != expected)
        {
            throw new InvalidOperationException($"{path}: wrote {fs.Length} bytes, expected {expected}");
        }

        return fs.Length;
    }

    /// <summary>
    /// The legacy <c>freq_cis_real</c> and <c>freq_cis_imag</c> tables (seq_len rows of head_size / 2) as llama2.c's
    /// model.py <c>precompute_freqs_cis</c> computes them in float32: frequency i is 1 / 10000^(2i / head_size), the angle at
    /// position p is p times it, rounded to float, and its cosine and sine are rounded from double. PyTorch's float32
    /// cos/sin can differ from these in the last bit; llama2.c and kvaq skip the tables.
    /// </summary>
    public static (float[] Cos, float[] Sin) FreqCis(int headDim, int seqLen)
    {
        int half = headDim / 2;
        var freqs = new float[half];
        for (int i = 0; i < half; i++)
        {
            freqs[i] = 1f / MathF.Pow(RopeTheta, (float)(2 * i) / headDim);
        }

        var cos = new float[seqLen * half];
        var sin = new float[seqLen * half];
        for (int p = 0; p < seqLen; p++)
        {
            for (int i = 0; i < half; i++)
            {
                float angle = p * freqs[i];
                cos[(p * half) + i] = (float)Math.Cos(angle);
                sin[(p * half) + i] = (float)Math.Sin(angle);
            }
        }

        return (cos, sin);
    }

    /// <summary>
    /// The llama2.c <c>tokenizer.bin</c> of a SentencePiece (GGUF <c>llama</c>) vocabulary, as llama2.c's tokenizer.py exports
    /// it: the longest piece's byte length (uint32), then per token its score (float32), byte length (int32) and UTF-8 bytes,
    /// with <c>▁</c> written as a space and BOS / EOS as <c>\n&lt;s&gt;\n</c> / <c>\n&lt;/s&gt;\n</c>. The inverse of
    /// <see cref="GgufVocabulary.FromLlama2cTokenizer"/>. Refuses, naming the key and value, what llama2.c's tokenizer cannot
    /// run: another tokenizer model (gpt2 byte-level BPE, ...), a vocabulary of another size than the model's, BOS / EOS
    /// other than 1 / 2, byte tokens not at ids 3..258 (llama2.c's byte fallback is byte + 3), no space prefix.
    /// </summary>
    public static byte[] TokenizerBytes(GgufTokenizerMetadata tokenizer, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        string Refuse(string what) => $"{tokenizer.Source}: {what}; a llama2.c tokenizer.bin cannot represent it";
        if (tokenizer.Model != "llama")
        {
            throw new ArgumentException(Refuse($"tokenizer.ggml.model is '{tokenizer.Model}', not a SentencePiece (llama) vocabulary"));
        }

        var v = tokenizer.Values;
        if (v.GetValueOrDefault("tokenizer.ggml.tokens") is not string[] tokens || tokens.Length != vocabSize)
        {
            throw new ArgumentException(Refuse($"tokenizer.ggml.tokens holds {tokenizer.TokenCount} tokens for a model vocabulary of {vocabSize}"));
        }

        long? Integer(string key) => v.TryGetValue(key, out var x) ? GgufFile.ToInteger(tokenizer.Source, key, x) : null;
        long bos = Integer("tokenizer.ggml.bos_token_id") ?? 1, eos = Integer("tokenizer.ggml.eos_token_id") ?? 2;
        if (bos != 1 || eos != 2)
        {
            throw new ArgumentException(Refuse($"tokenizer.ggml.bos_token_id / eos_token_id are {bos} / {eos}, and llama2.c's are 1 / 2"));
        }

        if (v.GetValueOrDefault("tokenizer.ggml.add_space_prefix") is false)
        {
            throw new ArgumentException(Refuse("tokenizer.ggml.add_space_prefix is false, and llama2.c always puts a space before the text"));
        }

        for (int b = 0; b < 256; b++)
        {
            var piece = $"<0x{b:X2}>";
            if (3 + b >= tokens.Length || tokens[3 + b] != piece)
            {
                throw new ArgumentException(Refuse($"token {3 + b} is '{(3 + b < tokens.Length ? tokens[3 + b] : string.Empty)}', not the byte token {piece} (llama2.c's byte fallback takes byte b as token b + 3)"));
            }
        }

        var scores = v.GetValueOrDefault("tokenizer.ggml.scores") as float[] ?? new float[tokens.Length];
        if (scores.Length < tokens.Length)
        {
            throw new ArgumentException(Refuse($"tokenizer.ggml.scores has {scores.Length} entries for {tokens.Length} tokens"));
        }

        var pieces = new byte[tokens.Length][];
        for (int i = 0; i < tokens.Length; i++)
        {
            string text = i switch
            {
                1 => "\n<s>\n",
                2 => "\n</s>\n",
                _ => tokens[i].Replace(SpaceMarker, " ", StringComparison.Ordinal),
            };
            pieces[i] = Encoding.UTF8.GetBytes(text);
        }

        using var ms = new MemoryStream();
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(word, (uint)pieces.Max(p => p.Length));
        ms.Write(word);
        for (int i = 0; i < pieces.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(word, scores[i]);
            ms.Write(word);
            BinaryPrimitives.WriteInt32LittleEndian(word, pieces[i].Length);
            ms.Write(word);
            ms.Write(pieces[i]);
        }

        return ms.ToArray();
    }

    /// <summary>
    /// The special tokens of a vocabulary (GGUF token type unknown, control or unused), which llama2.c's tokenizer prints as
    /// their pieces (<c>&lt;unk&gt;</c>, <c>\n&lt;s&gt;\n</c>) where llama.cpp's prints nothing.
    /// </summary>
    public static IReadOnlySet<int> SpecialTokens(GgufTokenizerMetadata tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var special = new HashSet<int> { 0, 1, 2 };
        if (tokenizer.Values.GetValueOrDefault("tokenizer.ggml.token_type") is Array types)
        {
            for (int i = 0; i < types.Length; i++)
            {
                if (Convert.ToInt32(types.GetValue(i), System.Globalization.CultureInfo.InvariantCulture) is (int)GgufTokenType.Unknown or (int)GgufTokenType.Control or (int)GgufTokenType.Unused)
                {
                    special.Add(i);
                }
            }
        }

        return special;
    }
}
