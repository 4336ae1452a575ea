using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// Our engine against llama.cpp (LLamaSharp 0.30.0, CPU) on GGUF files written by our converter: logits at every
/// position, tokenization and perplexity. llama.cpp keeps its KV cache in F32 here, with flash attention off.
/// </summary>
public class LlamaCppAgreementTests(ConvertedModels converted, ITestOutputHelper output) : IClassFixture<ConvertedModels>
{
    private static string WikiText(int chars) => File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..chars];

    [LlamaCppFact]
    public void Stories260K_F32Gguf_LogitsAgreeWithinOneThousandthOver128Tokens()
    {
        var gguf = converted.Get("stories260K", GgmlType.F32);
        using var ours = ModelLoader.Load("stories260K");
        var tokens = ours.Tokenizer!.Encode(WikiText(2000), addBos: true).Take(128).ToArray();
        Assert.Equal(128, tokens.Length);

        var expected = OurLogits(ours, tokens);
        using var model = LlamaCppModel.Load(gguf);
        using var ctx = model.CreateContext(new LlamaCppContextOptions { ContextSize = 128, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32, Threads = 1 });
        var actual = ctx.EvaluateAll(tokens);

        double maxDiff = MaxAbsDiff(expected, actual);
        output.WriteLine($"stories260K F32: max |logit difference| over 128 x {ours.Config.VocabSize} = {maxDiff:E3}");
        Assert.True(maxDiff <= 1e-3, $"max |logit difference| {maxDiff:E3} > 1e-3");
    }

    // Q8_0/Q4_0 weights: both engines quantize activations to Q8_0 blocks for these matrices, so a 1-ulp difference
    // upstream can flip one int8 rounding and the logits drift apart. Since RMSNorm accumulates in double as ggml does,
    // tiny-qwen2 Q8_0 agrees to 4.8e-7 (it was 5.1e-2); Q4_0 (llama.cpp runs repacked Q4_0 kernels with another
    // summation order) and stories260K (attention/SiLU ulps) still differ by 0.04-0.25 (see README "Agreement with
    // llama.cpp"). These tests hold tiny-qwen2 Q8_0 to 1e-3 and pin the other measured bounds and top-1 agreement.
    [LlamaCppTheory]
    [InlineData(GgmlType.Q8_0, 1e-3)]
    [InlineData(GgmlType.Q4_0, 1e-3)]
    public void Stories260K_QuantizedGguf_BothEnginesOnSameFile_LogitsAgreeWithinMeasuredBound(GgmlType type, double bound)
    {
        var gguf = converted.Get("stories260K", type);
        using var ours = ModelLoader.Load(gguf);
        using var text = ModelLoader.Load("stories260K");
        var tokens = text.Tokenizer!.Encode(WikiText(2000), addBos: true).Take(128).ToArray();
        AssertAgreement($"stories260K {type}", ours, gguf, tokens, bound, minTop1Agreement: 0.95);
    }

    [LlamaCppTheory]
    [InlineData(GgmlType.F32, 1e-3)]
    [InlineData(GgmlType.Q8_0, 1e-3)]
    [InlineData(GgmlType.Q4_0, 1e-3)]
    public void SyntheticQwen2_GqaHalfSplitRopeQkvBias_LogitsAgree(GgmlType type, double bound)
    {
        var gguf = converted.GetSynthetic("tiny-qwen2", type);
        using var ours = ModelLoader.Load(gguf);
        Assert.True(ours.Config.KvHeads < ours.Config.Heads, "tiny-qwen2 should use grouped-query attention");
        Assert.Equal(Model.RopeLayout.HalfSplit, ours.Config.RopeLayout);
        Assert.NotNull(ours.Weights.Layers[0].Bq);
        var tokens = RandomTokens(128, ours.Config.VocabSize, seed: 11);
        AssertAgreement($"tiny-qwen2 {type}", ours, gguf, tokens, bound, minTop1Agreement: type == GgmlType.F32 ? 1.0 : 0.9);
    }

    [LlamaCppTheory]
    [InlineData(GgmlType.F32)]
    public void SyntheticLlama_Llama3RopeScalingUntiedOutput_LogitsAgreeWithinOneThousandth(GgmlType type)
    {
        var gguf = converted.GetSynthetic("tiny-llama", type);
        using var ours = ModelLoader.Load(gguf);
        Assert.True(ours.Config.RopeScaling is not null || ours.Weights.RopeFrequencyFactors is not null, "tiny-llama should carry Llama 3 rope scaling");
        var tokens = RandomTokens(128, ours.Config.VocabSize, seed: 12);
        AssertAgreement($"tiny-llama {type}", ours, gguf, tokens, 1e-3, minTop1Agreement: 1.0);
    }

    [LlamaCppFact]
    public void Stories260K_Gguf_TokenizesLikeOurTokenizer()
    {
        var gguf = converted.Get("stories260K", GgmlType.F32);
        using var ours = ModelLoader.Load("stories260K");
        using var model = LlamaCppModel.Load(gguf, vocabOnly: true);
        var text = WikiText(3000);
        Assert.Equal(ours.Tokenizer!.Encode(text, addBos: true), model.Tokenize(text, addBos: true));
    }

    [LlamaCppFact]
    public void Stories3M_F32Gguf_PerplexityOnWikiText20kCharsAgreesWithinHalfPercent()
    {
        var gguf = converted.Get("stories3M-q80", GgmlType.F32);
        using var ours = ModelLoader.Load(gguf);
        var text = WikiText(20_000);
        using var llama = LlamaCppModel.Load(gguf);
        var tokens = llama.Tokenize(text, addBos: true);
        using (var file = KvAdaQuant.Formats.Gguf.GgufFile.Open(gguf))
        {
            Assert.Equal(tokens, KvAdaQuant.Tokenization.GgufTokenizerFactory.Create(file).Encode(text, addBos: true));
        }

        const int ctx = 512;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var transformer = new Transformer(ours, 1);
        var expected = PerplexityEvaluator.Evaluate(transformer, tokens, ctx, layout => new FullPrecisionKvCache(layout, half: false), llama.BosToken);
        using var context = llama.CreateContext(new LlamaCppContextOptions { ContextSize = ctx, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32, Threads = 1 });
        double oursSeconds = sw.Elapsed.TotalSeconds;
        var actual = LlamaCppPerplexity.Evaluate(context, tokens, ctx);
        double llamaSeconds = sw.Elapsed.TotalSeconds - oursSeconds;

        output.WriteLine($"stories3M-q80 F32 GGUF, {tokens.Length} tokens, ctx {ctx}: kvaq {expected.Perplexity:F4}, llama.cpp {actual.Perplexity:F4} over {actual.TokensScored} tokens ({oursSeconds:F1} s / {llamaSeconds:F1} s)");
        Assert.Equal(expected.TokensScored, actual.TokensScored);
        Assert.True(actual.Chunks >= 2, $"only {actual.Chunks} chunk(s)");
        double rel = Math.Abs(expected.Perplexity - actual.Perplexity) / actual.Perplexity;
        Assert.True(rel <= 0.005, $"perplexity kvaq {expected.Perplexity:F4} vs llama.cpp {actual.Perplexity:F4}: {rel:P3} apart");
    }

    private void AssertAgreement(string what, Model.LlamaModel ours, string gguf, int[] tokens, double tolerance, double minTop1Agreement)
    {
        var expected = OurLogits(ours, tokens);
        using var model = LlamaCppModel.Load(gguf);
        using var ctx = model.CreateContext(new LlamaCppContextOptions { ContextSize = tokens.Length, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32, Threads = 1 });
        var actual = ctx.EvaluateAll(tokens);
        double maxDiff = MaxAbsDiff(expected, actual);
        double maxAbs = expected.Max(MathF.Abs);
        int vocab = ours.Config.VocabSize;
        int sameTop1 = 0;
        for (int p = 0; p < tokens.Length; p++)
        {
            sameTop1 += ArgMax(expected.AsSpan(p * vocab, vocab)) == ArgMax(actual.AsSpan(p * vocab, vocab)) ? 1 : 0;
        }

        output.WriteLine($"{what}: max |logit difference| over {tokens.Length} x {vocab} = {maxDiff:E3} (largest |logit| {maxAbs:F2}); same top-1 at {sameTop1}/{tokens.Length}");
        Assert.True(maxDiff <= tolerance, $"{what}: max |logit difference| {maxDiff:E3} > {tolerance:E0}");
        Assert.True(sameTop1 >= minTop1Agreement * tokens.Length, $"{what}: same top-1 token at only {sameTop1}/{tokens.Length} positions");
    }

    private static int ArgMax(ReadOnlySpan<float> v) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(v);

    private static int[] RandomTokens(int n, int vocab, int seed)
    {
        var rng = new Random(seed);
        var t = new int[n];
        t[0] = 1;
        for (int i = 1; i < n; i++)
        {
            t[i] = rng.Next(3, vocab);
        }

        return t;
    }

    private static float[] OurLogits(Model.LlamaModel model, int[] tokens)
    {
        using var transformer = new Transformer(model, 2);
        using var cache = new FullPrecisionKvCache(transformer.CacheLayout(tokens.Length), half: false);
        var logits = new float[tokens.Length * model.Config.VocabSize];
        transformer.Forward(tokens, 0, cache, logits, allLogits: true);
        return logits;
    }

    private static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            Assert.False(float.IsNaN(b[i]), $"llama.cpp logit {i} is NaN");
            max = Math.Max(max, Math.Abs(a[i] - b[i]));
        }

        return max;
    }
}
