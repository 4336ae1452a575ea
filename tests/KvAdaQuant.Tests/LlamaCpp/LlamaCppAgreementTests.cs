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
        using var ctx = model.CreateContext(new LlamaCppContextOptions { ContextSize = 128, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32 });
        var actual = ctx.EvaluateAll(tokens);

        double maxDiff = MaxAbsDiff(expected, actual);
        output.WriteLine($"stories260K F32: max |logit difference| over 128 x {ours.Config.VocabSize} = {maxDiff:E3}");
        Assert.True(maxDiff <= 1e-3, $"max |logit difference| {maxDiff:E3} > 1e-3");
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

    private static float[] OurLogits(Model.LlamaModel model, int[] tokens)
    {
        var transformer = new Transformer(model, 2);
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
