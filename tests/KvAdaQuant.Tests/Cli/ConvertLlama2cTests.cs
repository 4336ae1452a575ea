using System.Buffers.Binary;
using KvAdaQuant.Cli;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Model;
using KvAdaQuant.Tests.Formats;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>kvaq convert --format llama2c</c> (or <c>--out F.bin</c>): the legacy llama2.c fp32 checkpoint and its
/// <c>tok{vocab}.bin</c>. Round trips give back the original file's weights and tokenizer byte for byte and the reference
/// greedy tokens; what llama2.c cannot represent is refused, naming the property and its value.
/// </summary>
public class ConvertLlama2cTests(ConvertLlama2cTests.Sources sources) : IClassFixture<ConvertLlama2cTests.Sources>
{
    private static int Kvaq(params string[] args) => Program.BuildRoot().Parse(args).Invoke();

    private static int[] ReferenceTokens(string name) => Fixtures.ReferenceGreedy(name).GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();

    /// <summary>
    /// Where the legacy freq_cis tables lie in a llama2.c fp32 file, from its header alone: after the token embedding, the
    /// per-layer tensors and the final norm; seq_len x head_size floats.
    /// </summary>
    private static (long Start, long Length) FreqCisRegion(byte[] file)
    {
        var h = Enumerable.Range(0, 7).Select(i => (long)BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(i * 4))).ToArray();
        long dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kvHeads = h[4], vocab = Math.Abs(h[5]), seq = h[6];
        long headSize = dim / heads, kvDim = kvHeads * headSize;
        long floats = (vocab * dim) + (layers * dim) + (layers * dim * dim) + (2 * layers * dim * kvDim) + (layers * dim * dim) + (layers * dim)
            + (3 * layers * dim * hidden) + dim;
        return (28 + (floats * 4), seq * headSize * 4);
    }

    /// <summary>
    /// Asserts that two llama2.c fp32 files hold the same header and the same bytes everywhere but the freq_cis tables, and
    /// that those agree within 1e-7 (see the comment in the first test).
    /// </summary>
    private static void AssertSameCheckpoint(byte[] expected, byte[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        var (start, length) = FreqCisRegion(expected);
        Assert.True(expected.AsSpan(0, (int)start).SequenceEqual(actual.AsSpan(0, (int)start)), "header or weights before freq_cis differ");
        Assert.True(expected.AsSpan((int)(start + length)).SequenceEqual(actual.AsSpan((int)(start + length))), "weights after freq_cis differ");
        var a = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(expected.AsSpan((int)start, (int)length));
        var b = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(actual.AsSpan((int)start, (int)length));
        for (int i = 0; i < a.Length; i++)
        {
            Assert.True(Math.Abs(a[i] - b[i]) <= 1e-7f, $"freq_cis value {i}: {a[i]} vs {b[i]}");
        }
    }

    [Fact]
    public void Stories260KThroughGgufBackToLlama2c_ReferenceTokensOriginalWeightsAndTokenizerBytes()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("back"));
        string gguf = dir.File("s.gguf"), bin = Path.Combine(dir.File("back"), "stories260K.bin");
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", gguf, "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", gguf, "--out", bin, "--json"));
        Assert.Equal(["stories260K.bin", "tok512.bin"], Directory.GetFiles(dir.File("back")).Select(Path.GetFileName).Order());

        // The weights are the original's bit for bit (Q/K rows stay interleaved through GGUF llama). The legacy freq_cis
        // tables, which llama2.c's run.c and kvaq skip, hold cos/sin that PyTorch computed in float32 when the file was
        // exported; kvaq recomputes them rounded from double, which differs in the last bit at about one value in twenty
        // (at most 6e-8), so they are compared within 1e-7 rather than byte for byte.
        AssertSameCheckpoint(File.ReadAllBytes(Fixtures.Stories260K), File.ReadAllBytes(bin));

        // The tokenizer comes back byte for byte: '▁' as spaces, BOS/EOS as "\n<s>\n" / "\n</s>\n", scores (-0.0 included).
        Assert.Equal(File.ReadAllBytes(Fixtures.Stories260KTokenizer), File.ReadAllBytes(Path.Combine(dir.File("back"), "tok512.bin")));

        using var m = ModelLoader.Load(bin);
        Assert.Equal("llama2c-fp32", m.Format);
        Assert.Equal(ReferenceTokens("stories260K"), Fp32Decode.GreedyFromBos(m, 64));
    }

    [Fact]
    public void Stories3MQ80ToLlama2cDecodesLikeTheOriginal()
    {
        // The int8 export is dequantized to fp32 exactly as kvaq's loader dequantizes it, so the model computes the same.
        using var dir = new TempDir();
        string bin = dir.File("s3m.bin");
        Assert.Equal(0, Kvaq("convert", "--model", "stories3M-q80", "--out", bin, "--json"));
        Assert.Equal(File.ReadAllBytes(Fixtures.Stories3MTokenizer), File.ReadAllBytes(dir.File("tok4096.bin")));
        using var original = ModelLoader.Load("stories3M-q80");
        using var m = ModelLoader.Load(bin);
        Assert.Equal("llama2c-fp32", m.Format);
        Assert.Equal(original.Config, m.Config);
        var row = new float[m.Config.Dim];
        var back = new float[m.Config.Dim];
        foreach (var (a, b) in new[] { (original.Weights.Layers[3].Wk, m.Weights.Layers[3].Wk), (original.Weights.TokenEmbedding, m.Weights.TokenEmbedding) })
        {
            for (int r = 0; r < a.Rows; r += 7)
            {
                a.DequantizeRow(r, row);
                b.DequantizeRow(r, back);
                Assert.Equal(row, back);
            }
        }

        var expected = Fp32Decode.GreedyFromBos(original, 64);
        Assert.Equal(expected, Fp32Decode.GreedyFromBos(m, 64));
        Assert.Equal(ReferenceTokens("stories3M-q80"), expected);
    }

    [Fact]
    public void HalfSplitHfFolderWithUntiedOutputBecomesTheOriginalCheckpointPlusWcls()
    {
        // stories260K as a Hugging Face folder (Q/K half-split) with lm_head.weight written out: llama2.c gets the rows
        // back in interleaved order, vocab_size negative in the header and the classifier after freq_cis.
        using var dir = new TempDir();
        var hf = dir.File("hf");
        Directory.CreateDirectory(hf);
        HfFolderWriter.Write(Fixtures.Stories260K, hf, untieOutput: true);
        string bin = dir.File("untied.bin");
        Assert.Equal(0, Kvaq("convert", "--model", hf, "--out", bin, "--tokenizer", Fixtures.Stories260KTokenizer, "--json"));
        var original = File.ReadAllBytes(Fixtures.Stories260K);
        var written = File.ReadAllBytes(bin);
        Assert.Equal(-512, BinaryPrimitives.ReadInt32LittleEndian(written.AsSpan(20)));
        int embeddingBytes = 512 * 64 * 4;
        Assert.Equal(original.Length + embeddingBytes, written.Length);
        Assert.True(original.AsSpan(28, embeddingBytes).SequenceEqual(written.AsSpan(original.Length)), "wcls is not the embedding");
        var patched = written[..original.Length];
        BinaryPrimitives.WriteInt32LittleEndian(patched.AsSpan(20), 512);
        AssertSameCheckpoint(original, patched);

        using var m = ModelLoader.Load(bin);
        Assert.False(m.Config.TiedEmbeddings);
        Assert.Equal(RopeLayout.Interleaved, m.Config.RopeLayout);
        Assert.Equal(ReferenceTokens("stories260K"), Fp32Decode.GreedyFromBos(m, 64));
    }

    [Fact]
    public void HfFolderWrittenByKvaqComesBackAsTheOriginalWeightsWithATokenizerThatEncodesAlike()
    {
        // llama2.c -> Hugging Face folder (Q/K half-split, tokenizer.json whose merges come from the scores) -> llama2.c: the
        // rows go back to interleaved order, and the vocabulary returns with scores from merge ranks (not the original
        // values) that tokenize the same.
        using var dir = new TempDir();
        string hf = dir.File("hf"), bin = dir.File("back.bin");
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", hf, "--format", "hf", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", hf, "--out", bin, "--json"));
        AssertSameCheckpoint(File.ReadAllBytes(Fixtures.Stories260K), File.ReadAllBytes(bin));
        Assert.NotEqual(File.ReadAllBytes(Fixtures.Stories260KTokenizer), File.ReadAllBytes(dir.File("tok512.bin")));
        var text = File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..5000];
        using var original = ModelLoader.Load("stories260K");
        using var back = ModelLoader.Load(bin);
        var ids = original.Tokenizer!.Encode(text, addBos: true);
        Assert.Equal(ids, back.Tokenizer!.Encode(text, addBos: true));
        Assert.Equal(original.Tokenizer.Decode(ids), back.Tokenizer.Decode(ids));
        Assert.Equal(ReferenceTokens("stories260K"), Fp32Decode.GreedyFromBos(back, 64));
    }

    [Fact]
    public void ExistingIdenticalTokenizerIsKeptAndFormatFlagWorksWithoutBinSuffix()
    {
        using var dir = new TempDir();
        File.Copy(Fixtures.Stories260KTokenizer, dir.File("tok512.bin"));
        Assert.Equal(0, Kvaq("convert", "--model", "stories260K", "--out", dir.File("model.ckpt"), "--format", "llama2c", "--json"));
        Assert.Equal(["model.ckpt", "tok512.bin"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order());
        using var m = ModelLoader.Load(dir.File("model.ckpt"));
        Assert.Equal(ReferenceTokens("stories260K")[..16], Fp32Decode.GreedyFromBos(m, 16));
    }

    [Fact]
    public void WhatLlama2cCannotRepresentIsRefusedByNameAndValue()
    {
        using var m = ModelLoader.Load(Fixtures.Stories260K);
        var c = m.Config;
        var w = m.Weights;
        Llama2cExporter.CheckRepresentable(c, w, "m"); // the original passes
        void Refused(ModelConfig config, ModelWeights weights, string message)
            => Assert.Contains(message, Assert.Throws<ArgumentException>(() => Llama2cExporter.CheckRepresentable(config, weights, "m")).Message);

        Refused(c with { RopeTheta = 500000 }, w, "m: RoPE theta is 500000, and llama2.c computes RoPE with theta 10000");
        Refused(c with { NormEps = 1e-6f }, w, "m: RMSNorm epsilon is 1E-06, and llama2.c uses 1e-5");
        Refused(c with { RopeScaling = new RopeScaling(8, 1, 4, 8192) }, w, "RoPE scaling is Llama 3 with factor 8");
        Refused(c with { HeadDim = 16 }, w, "head size is 16 with 8 heads and dim 64");
        Refused(c with { BosToken = 0 }, w, "BOS / EOS token ids are 0 / 2");
        var biased = w.Layers.Select((l, i) => new LayerWeights
        {
            AttentionNorm = l.AttentionNorm,
            Wq = l.Wq,
            Wk = l.Wk,
            Wv = l.Wv,
            Wo = l.Wo,
            Bq = i == 1 ? new float[c.QDim] : null,
            FfnNorm = l.FfnNorm,
            W1 = l.W1,
            W2 = l.W2,
            W3 = l.W3,
        }).ToArray();
        Refused(c, new ModelWeights(w.TokenEmbedding, biased, w.FinalNorm, w.Output, []), "q/k/v projections have biases");
        Refused(c, new ModelWeights(w.TokenEmbedding, w.Layers, w.FinalNorm, w.Output, []) { RopeFrequencyFactors = new float[4] }, "RoPE frequency factors (rope_freqs.weight)");

        // The tokenizer: SentencePiece vocabularies that llama2.c's tokenizer runs as llama.cpp's does, and nothing else.
        GgufTokenizerMetadata Vocab() => GgufVocabulary.FromLlama2cTokenizer(Fixtures.Stories260KTokenizer, 512).ToMetadata("t");
        Assert.Equal(File.ReadAllBytes(Fixtures.Stories260KTokenizer), Llama2cExporter.TokenizerBytes(Vocab(), 512));
        void TokenizerRefused(GgufTokenizerMetadata t, int vocab, string message)
            => Assert.Contains(message, Assert.Throws<ArgumentException>(() => Llama2cExporter.TokenizerBytes(t, vocab)).Message);

        TokenizerRefused(Vocab().Set("tokenizer.ggml.model", "gpt2"), 512, "t: tokenizer.ggml.model is 'gpt2', not a SentencePiece (llama) vocabulary");
        TokenizerRefused(Vocab(), 600, "tokenizer.ggml.tokens holds 512 tokens for a model vocabulary of 600");
        TokenizerRefused(Vocab().Set("tokenizer.ggml.eos_token_id", 3u), 512, "tokenizer.ggml.bos_token_id / eos_token_id are 1 / 3, and llama2.c's are 1 / 2");
        TokenizerRefused(Vocab().Set("tokenizer.ggml.add_space_prefix", false), 512, "tokenizer.ggml.add_space_prefix is false");
        var tokens = (string[])Vocab().Values["tokenizer.ggml.tokens"];
        (tokens[13], tokens[300]) = (tokens[300], tokens[13]);
        TokenizerRefused(Vocab().Set("tokenizer.ggml.tokens", tokens), 512, $"token 13 is '{tokens[13]}', not the byte token <0x0A>");
    }

    [Theory]
    [InlineData(new[] { "--model", "{dir}/theta", "--out", "{dir}/x.bin", "--tokenizer", "{tok}" }, "{dir}/theta: RoPE theta is 500000, and llama2.c computes RoPE with theta 10000; a llama2.c checkpoint cannot represent it")]
    [InlineData(new[] { "--model", "{dir}/eps", "--out", "{dir}/x.bin", "--tokenizer", "{tok}" }, "{dir}/eps: RMSNorm epsilon is 1E-06, and llama2.c uses 1e-5")]
    [InlineData(new[] { "--model", "{dir}/bias", "--out", "{dir}/x.bin", "--tokenizer", "{tok}" }, "{dir}/bias: q/k/v projections have biases (architecture llama)")]
    [InlineData(new[] { "--model", "{dir}/gpt2tok", "--out", "{dir}/x.bin" }, "{dir}/gpt2tok/tokenizer.json: tokenizer.ggml.model is 'gpt2', not a SentencePiece (llama) vocabulary; a llama2.c tokenizer.bin cannot represent it")]
    [InlineData(new[] { "--model", "{dir}/tiny.gguf", "--out", "{dir}/x.bin" }, "{dir}/tiny.gguf: RoPE theta is 500000")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/other/s.bin" }, "--out {dir}/other/s.bin: {dir}/other/tok512.bin beside it holds another tokenizer")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/tok512.bin" }, "--out {dir}/tok512.bin: is the name of the tokenizer written beside the checkpoint")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/x.bin", "--type", "q8_0" }, "--type: 'q8_0' cannot be written to a llama2.c checkpoint")]
    [InlineData(new[] { "--synthetic", "tiny-llama", "--out", "{dir}/x.bin" }, "--synthetic writes GGUF only")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/x.bin", "--max-shard-size", "1MB" }, "--max-shard-size: applies to Hugging Face folders (--format hf) only")]
    [InlineData(new[] { "--model", "stories260K", "--out", "{dir}/x", "--format", "llama2" }, "--format: 'llama2' is not gguf, hf or llama2c")]
    public void BadLlama2cConversionsFailWithOneClearLineAndLeaveNothingBehind(string[] args, string message)
    {
        var dir = sources.Dir;
        var before = Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Order().ToArray();
        string Expand(string a) => a.Replace("{dir}", dir.Path).Replace("{tok}", Fixtures.Stories260KTokenizer);
        var (rc, stdout, stderr) = KvaqProcess.Run(["convert", .. args.Select(Expand)]);
        Assert.Equal(1, rc);
        Assert.Empty(stdout);
        var line = stderr.Split('\r', '\n').Last(l => l.StartsWith("kvaq: error: ", StringComparison.Ordinal));
        Assert.StartsWith("kvaq: error: " + Expand(message), line);
        Assert.Equal(before, Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Order().ToArray());
    }

    /// <summary>
    /// Inputs of the refusals, made once: stories260K as Hugging Face folders with RoPE theta 500000, RMSNorm epsilon 1e-6,
    /// q/k/v biases, or a byte-level GPT-2 tokenizer.json; the tiny-llama preset as GGUF; and a folder whose tok512.bin is
    /// another tokenizer than stories260K's.
    /// </summary>
    public sealed class Sources : IDisposable
    {
        private readonly TempDir _dir = new();

        public Sources()
        {
            foreach (var (folder, edit, bias) in new (string, Action<Dictionary<string, object>>?, bool)[]
            {
                ("theta", c => c["rope_theta"] = 500000.0, false),
                ("eps", c => c["rms_norm_eps"] = 1e-6, false),
                ("bias", null, true),
                ("gpt2tok", null, false),
            })
            {
                Directory.CreateDirectory(_dir.File(folder));
                HfFolderWriter.Write(Fixtures.Stories260K, _dir.File(folder), editConfig: edit, qkvBias: bias);
            }

            HfFolderWriter.WriteGpt2SubsetTokenizer(_dir.File("gpt2tok"));
            Assert.Equal(0, Kvaq("convert", "--synthetic", "tiny-llama", "--out", _dir.File("tiny.gguf"), "--json"));
            Directory.CreateDirectory(_dir.File("other"));
            var tok = File.ReadAllBytes(Fixtures.Stories260KTokenizer);
            tok[^1] ^= 1;
            File.WriteAllBytes(Path.Combine(_dir.File("other"), "tok512.bin"), tok);
        }

        public TempDir Dir => _dir;

        public void Dispose() => _dir.Dispose();
    }
}
