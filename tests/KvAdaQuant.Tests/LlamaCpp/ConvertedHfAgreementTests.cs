using KvAdaQuant.Cli;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.KvCache;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;
using KvAdaQuant.Tests.Formats;
using KvAdaQuant.Tokenization;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// Hugging Face folders converted to GGUF by <c>kvaq convert</c> (Q/K rows permuted for llama.cpp's interleaved RoPE, the
/// tokenizer carried from tokenizer.json) run in llama.cpp (LLamaSharp 0.30.0, F32 KV cache) with the logits kvaq computes
/// on the folder itself (half-split RoPE), within the 1e-3 of the other agreement tests.
/// </summary>
public class ConvertedHfAgreementTests(ConvertedModels converted, ITestOutputHelper output) : IClassFixture<ConvertedModels>
{
    private static int Kvaq(params string[] args) => Program.BuildRoot().Parse(args).Invoke();

    [LlamaCppFact]
    public void Stories260KHfFolder_ConvertedToGguf_TokenizesAndComputesLikeTheFolder()
    {
        using var dir = new TempDir();
        var hf = dir.File("hf");
        Directory.CreateDirectory(hf);
        HfFolderWriter.Write(Fixtures.Stories260K, hf);
        var vocab = GgufVocabulary.FromLlama2cTokenizer(Fixtures.Stories260KTokenizer, 512).ToMetadata(Fixtures.Stories260KTokenizer);
        File.WriteAllText(Path.Combine(hf, "tokenizer.json"), GgufTokenizerToHf.TokenizerJson(vocab));
        var gguf = dir.File("s.gguf");
        Assert.Equal(0, Kvaq("convert", "--model", hf, "--out", gguf, "--type", "f32", "--json"));

        using var ours = ModelLoader.Load(hf);
        Assert.Equal(Model.RopeLayout.HalfSplit, ours.Config.RopeLayout);
        var text = File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..2000];
        var tokens = ours.Tokenizer!.Encode(text, addBos: true).Take(128).ToArray();
        Assert.Equal(128, tokens.Length);

        using var model = LlamaCppModel.Load(gguf);
        Assert.Equal(ours.Tokenizer.Encode(text, addBos: true), model.Tokenize(text, addBos: true));
        AssertAgreement("stories260K HF folder -> GGUF F32", Logits(ours, tokens), model, tokens, ours.Config.VocabSize);
    }

    [LlamaCppTheory]
    [InlineData("tiny-qwen2", "f32")]
    [InlineData("tiny-llama", "f32")]
    [InlineData("tiny-llama", "q8_0")]
    public void SyntheticThroughHfFolderBackToGguf_LlamaCppAgrees(string preset, string type)
    {
        // GGUF -> HF folder -> GGUF: GQA, untied output and Llama 3 rope scaling (tiny-llama), half-split RoPE with QKV bias (tiny-qwen2).
        using var dir = new TempDir();
        var hf = dir.File("hf");
        var gguf = dir.File("back.gguf");
        Assert.Equal(0, Kvaq("convert", "--model", converted.GetSynthetic(preset, GgmlType.F32), "--out", hf, "--format", "hf", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", hf, "--out", gguf, "--type", type, "--json"));

        // F32: ours on the HF folder itself; Q8_0: ours on the quantized file (both engines see the same weights).
        using var ours = ModelLoader.Load(type == "f32" ? hf : gguf);
        var tokens = AgreementTokens.Random(128, ours.Config.VocabSize, seed: 13);
        using var model = LlamaCppModel.Load(gguf);
        AssertAgreement($"{preset} GGUF -> HF -> GGUF {type}", Logits(ours, tokens), model, tokens, ours.Config.VocabSize);
    }

    [LlamaCppFact]
    public void GgufAndHfInputsTakeLlamaCppKQuantTypes()
    {
        // llama-quantize's job: a GGUF file re-quantized to Q4_K_M, and a Hugging Face folder converted straight to Q6_K.
        using var dir = new TempDir();
        var f16 = converted.GetSynthetic("tiny-llama-256", GgmlType.F16);
        Assert.Equal(0, Kvaq("convert", "--model", f16, "--out", dir.File("k4.gguf"), "--type", "q4_k_m", "--threads", "2", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", f16, "--out", dir.File("hf"), "--format", "hf", "--type", "f16", "--json"));
        Assert.Equal(0, Kvaq("convert", "--model", dir.File("hf"), "--out", dir.File("k6.gguf"), "--type", "q6_k", "--threads", "2", "--json"));
        Assert.Equal(["hf", "k4.gguf", "k6.gguf"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName).Order()); // intermediates removed
        using (var k4 = ModelLoader.Load(dir.File("k4.gguf")))
        {
            Assert.Equal(GgmlType.Q4_K, k4.Weights.Layers[0].Wq.Type);
        }

        Assert.Equal(0, Kvaq("convert", "--model", dir.File("hf"), "--out", dir.File("q8.gguf"), "--type", "q8_0", "--json"));
        using var k6 = ModelLoader.Load(dir.File("k6.gguf"));
        Assert.Equal(GgmlType.Q6_K, k6.Weights.Layers[0].Wq.Type);

        // More bits stay closer to the F16 folder: Q8_0 < Q6_K < Q4_K_M in max |logit difference| (random weights, so large).
        using var hf = ModelLoader.Load(dir.File("hf"));
        using var q8 = ModelLoader.Load(dir.File("q8.gguf"));
        using var q4k = ModelLoader.Load(dir.File("k4.gguf"));
        var tokens = AgreementTokens.Random(16, hf.Config.VocabSize, seed: 5);
        var reference = Logits(hf, tokens);
        var diffs = new[] { q8, k6, q4k }.Select(m => Logits(m, tokens).Zip(reference).Max(p => Math.Abs(p.First - p.Second))).ToArray();
        output.WriteLine($"tiny-llama-256 F16 folder vs Q8_0 / Q6_K / Q4_K_M GGUF: max |logit difference| over 16 positions {diffs[0]:E3} / {diffs[1]:E3} / {diffs[2]:E3} (largest |logit| {reference.Max(MathF.Abs):F2})");
        Assert.True(diffs[0] > 0 && diffs[0] < diffs[1] && diffs[1] < diffs[2] && diffs[2] < 1.5, string.Join(" / ", diffs));
    }

    private void AssertAgreement(string what, float[] expected, LlamaCppModel model, int[] tokens, int vocab)
    {
        using var ctx = model.CreateContext(new LlamaCppContextOptions { ContextSize = tokens.Length, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32, Threads = 1 });
        var actual = ctx.EvaluateAll(tokens);
        Assert.Equal(expected.Length, actual.Length);
        double maxDiff = 0;
        int sameTop1 = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.False(float.IsNaN(actual[i]), $"llama.cpp logit {i} is NaN");
            maxDiff = Math.Max(maxDiff, Math.Abs(expected[i] - actual[i]));
        }

        for (int p = 0; p < tokens.Length; p++)
        {
            sameTop1 += System.Numerics.Tensors.TensorPrimitives.IndexOfMax(expected.AsSpan(p * vocab, vocab)) == System.Numerics.Tensors.TensorPrimitives.IndexOfMax(actual.AsSpan(p * vocab, vocab)) ? 1 : 0;
        }

        output.WriteLine($"{what}: max |logit difference| over {tokens.Length} x {vocab} = {maxDiff:E3}; same top-1 at {sameTop1}/{tokens.Length}");
        Assert.True(maxDiff <= 1e-3, $"{what}: max |logit difference| {maxDiff:E3} > 1e-3");
        Assert.Equal(tokens.Length, sameTop1);
    }

    private static float[] Logits(Model.LlamaModel model, int[] tokens)
    {
        using var transformer = new Transformer(model, 2);
        using var cache = new FullPrecisionKvCache(transformer.CacheLayout(tokens.Length), half: false);
        var logits = new float[tokens.Length * model.Config.VocabSize];
        transformer.Forward(tokens, 0, cache, logits, allLogits: true);
        return logits;
    }
}
