using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Formats;

public class GgufModelLoaderTests(ConvertedModels models) : IClassFixture<ConvertedModels>
{
    private const string Text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.";

    private static float[] AllLogits(LlamaModel model, int[] tokens)
    {
        var t = new Transformer(model, 2);
        using var cache = new FullPrecisionKvCache(t.CacheLayout(tokens.Length), half: false);
        var logits = new float[tokens.Length * model.Config.VocabSize];
        t.Forward(tokens, 0, cache, logits, allLogits: true);
        return logits;
    }

    [Fact]
    public void ConvertedStories260KF32GivesTheSameGreedyTokensAsTheBin()
    {
        var expected = Fixtures.ReferenceGreedy("stories260K").GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        using var bin = ModelLoader.Load(Fixtures.Stories260K);
        using var gguf = ModelLoader.Load(models.Stories(GgmlType.F32), Fixtures.Stories260KTokenizer);
        Assert.Equal("gguf", gguf.Format);
        Assert.Equal(bin.Config with { Architecture = "llama" }, gguf.Config);
        int[] Greedy(LlamaModel m)
        {
            var t = new Transformer(m, 2);
            using var s = new InferenceSession(t, new FullPrecisionKvCache(t.CacheLayout(m.Config.ContextLength), half: false));
            return new Generator(s, m.Tokenizer!).Generate([1], 64, new Sampler()).Tokens.ToArray();
        }

        Assert.Equal(expected, Greedy(gguf));
        Assert.Equal(Greedy(bin), Greedy(gguf));

        // F32 weights are copied bit for bit, so the logits are identical, not just close.
        var tokens = bin.Tokenizer!.Encode(Text, addBos: true).ToArray();
        Assert.Equal(AllLogits(bin, tokens), AllLogits(gguf, tokens));
    }

    [Fact]
    public void ConvertedVocabularyTokenizesLikeTheLlama2cTokenizer()
    {
        using var gguf = ModelLoader.Load(models.Stories(GgmlType.F32));
        var fromFile = gguf.Tokenizer!;
        var llama2c = ModelLoader.LoadTokenizer(Fixtures.Stories260KTokenizer, 512);
        foreach (var text in new[] { Text, "  two spaces, a tab\tand a newline\n", "Ünïcödé → 日本", "" })
        {
            var ids = llama2c.Encode(text, addBos: true);
            Assert.Equal(ids, fromFile.Encode(text, addBos: true));
            Assert.Equal(llama2c.Decode(ids), fromFile.Decode(ids));
        }
    }

    [Theory]
    [InlineData(GgmlType.Q8_0, 0.5, 0.1, 1.0)]
    [InlineData(GgmlType.Q4_0, 12.0, 2.0, 0.85)]
    public void QuantizedConversionsStayCloseToF32(GgmlType type, double maxAbs, double rms, double top1)
    {
        // Measured on this text: Q8_0 max 0.37, rms 0.071, top-1 36/36; Q4_0 max 8.7, rms 1.39, top-1 34/36
        // (stories260K is 64 wide, so 4-bit weights hurt it far more than a real-size model).
        using var f32 = ModelLoader.Load(models.Stories(GgmlType.F32), Fixtures.Stories260KTokenizer);
        using var q = ModelLoader.Load(models.Stories(type), Fixtures.Stories260KTokenizer);
        Assert.Equal(type, q.Weights.Layers[0].Wq.Type);
        Assert.Equal(GgmlType.F32, q.Weights.Layers[0].W2.Type); // rows of 172 are not whole blocks: F32 fallback
        var tokens = f32.Tokenizer!.Encode(Text, addBos: true).ToArray();
        var a = AllLogits(f32, tokens);
        var b = AllLogits(q, tokens);
        double max = 0, sum = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs(a[i] - b[i]);
            max = Math.Max(max, d);
            sum += d * d;
        }

        int v = f32.Config.VocabSize, agree = 0;
        for (int t = 0; t < tokens.Length; t++)
        {
            agree += a.AsSpan(t * v, v).IndexOf(a.AsSpan(t * v, v).ToArray().Max()) == b.AsSpan(t * v, v).IndexOf(b.AsSpan(t * v, v).ToArray().Max()) ? 1 : 0;
        }

        Assert.True(max <= maxAbs, $"{type}: max |logit difference| {max}");
        Assert.True(Math.Sqrt(sum / a.Length) <= rms, $"{type}: rms logit difference {Math.Sqrt(sum / a.Length)}");
        Assert.True(agree >= top1 * tokens.Length, $"{type}: top-1 agrees at {agree} of {tokens.Length} positions");
    }

    [Fact]
    public void TinyQwen2HasHalfSplitRopeBiasesAndTiedOutput()
    {
        using var m = ModelLoader.Load(models.TinyQwen2);
        var c = m.Config;
        Assert.Equal(("qwen2", RopeLayout.HalfSplit, true, 4, 2, 32, 1e6f, 1e-6f), (c.Architecture, c.RopeLayout, c.TiedEmbeddings, c.Heads, c.KvHeads, c.HeadDim, c.RopeTheta, c.NormEps));
        Assert.Same(m.Weights.TokenEmbedding, m.Weights.Output);
        Assert.All(m.Weights.Layers, l => Assert.Equal(c.KvDim, l.Bk!.Length));
        Assert.Equal(512, m.Tokenizer!.VocabSize); // the generated SentencePiece vocabulary, read back from the file
        var ids = m.Tokenizer.Encode("hello", addBos: true);
        Assert.Equal([1, 259 + 1 + 94 + ('h' - 'a')], ids.Take(2)); // BOS, "▁h" after '▁' and the 94 printable characters
        Assert.Equal("hello", m.Tokenizer.Decode(ids));
        var logits = AllLogits(m, [1, 300, 301, 302]);
        Assert.All(logits, x => Assert.True(float.IsFinite(x) && Math.Abs(x) < 50));
    }

    [Fact]
    public void TinyLlamaReadsRopeFreqsAndSeparateOutput()
    {
        using var m = ModelLoader.Load(models.TinyLlama);
        var c = m.Config;
        Assert.Equal(RopeLayout.Interleaved, c.RopeLayout);
        Assert.False(c.TiedEmbeddings);
        Assert.NotSame(m.Weights.TokenEmbedding, m.Weights.Output);
        Assert.Equal(GgufModelExporter.Llama3RopeFactors(500000f, 16, new RopeScaling(32f, 1f, 4f, 8192)), m.Weights.RopeFrequencyFactors);
        Assert.Null(m.Weights.Layers[0].Bq);
    }

    [Fact]
    public void BatchedPrefillEqualsStepwiseDecodeOnQwen2Layout()
    {
        using var m = ModelLoader.Load(models.TinyQwen2);
        int[] tokens = [1, 260, 300, 400, 500, 261];
        var all = AllLogits(m, tokens);
        var t = new Transformer(m, 2);
        using var cache = new FullPrecisionKvCache(t.CacheLayout(tokens.Length), half: false);
        var one = new float[m.Config.VocabSize];
        for (int p = 0; p < tokens.Length; p++)
        {
            t.Forward(tokens.AsSpan(p, 1), p, cache, one, allLogits: false);
            for (int i = 0; i < one.Length; i++)
            {
                Assert.True(Math.Abs(all[(p * one.Length) + i] - one[i]) <= 1e-4f * (1 + Math.Abs(one[i])), $"position {p} token {i}");
            }
        }
    }
}
