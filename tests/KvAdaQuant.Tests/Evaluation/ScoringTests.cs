using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Evaluation;

public class ScoringTests
{
    private static IKvCache Fp32(KvLayout l) => new FullPrecisionKvCache(l, half: false);

    [Fact]
    public void Kl_of_known_distributions_and_of_identical_ones()
    {
        float[] p = [MathF.Log(0.5f), MathF.Log(0.5f)];
        float[] q = [MathF.Log(0.25f), MathF.Log(0.75f)];
        double expected = (0.5 * Math.Log(0.5 / 0.25)) + (0.5 * Math.Log(0.5 / 0.75));
        Assert.Equal(expected, DistributionMath.KlDivergence(p, q), 6);
        Assert.Equal(0, DistributionMath.KlDivergence(p, p));
        Assert.Equal(99.01, DistributionMath.Percentile(Enumerable.Range(1, 100).Select(i => (double)i).ToArray(), 99), 9);
    }

    [Fact]
    public void Same_cache_gives_zero_kl_and_full_agreement_and_fp16_a_small_positive_kl()
    {
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        var tokens = ModelTextSampler.Sample(transformer, model.Tokenizer!, 128, 64, 42);
        Assert.Equal(tokens, ModelTextSampler.Sample(transformer, model.Tokenizer!, 128, 64, 42));
        var reference = KlReference.Compute(transformer, tokens, 64, Fp32, 1);
        var same = reference.Compare(Fp32);
        Assert.Equal(0, same.MeanKl);
        Assert.Equal(0, same.MaxKl);
        Assert.Equal(1, same.Top1Agreement);
        Assert.Equal(same.ReferencePerplexity, same.Perplexity, 9);
        Assert.Equal(2 * 31, same.Positions);

        var half = reference.Compare(l => new FullPrecisionKvCache(l, half: true));
        Assert.True(half.MeanKl > 0 && half.MeanKl < 1e-4, $"fp16 KL {half.MeanKl}");
    }

    [Fact]
    public void A_multiple_choice_item_scored_by_hand()
    {
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        using var transformer = new Transformer(model, 2);
        var item = DatasetReader.ReadArc(Fixtures.Path("data", "arc", "ARC-Easy-Test.jsonl"))[0];
        using var scorer = new LogLikelihoodScorer(transformer, tok, Fp32, 512);

        var lls = new double[item.Choices.Count];
        for (int i = 0; i < lls.Length; i++)
        {
            // By hand: tokenize context + continuation whole, feed one token at a time, add the log-softmax of each continuation token.
            var whole = tok.Encode(item.Contexts[i] + item.Continuations[i], addBos: true);
            int ctxLen = tok.Encode(item.Contexts[i], addBos: true).Count;
            using var session = new InferenceSession(transformer, Fp32(transformer.CacheLayout(whole.Count)));
            double ll = 0;
            for (int t = 0; t < whole.Count - 1; t++)
            {
                var logits = session.Decode(whole[t]);
                if (t + 1 >= ctxLen)
                {
                    ll += PerplexityEvaluator.LogSoftmaxAt(logits, whole[t + 1]);
                }
            }

            var s = scorer.Score(item.Contexts[i], item.Continuations[i]);
            Assert.Equal(whole.Count - ctxLen, s.Tokens);
            Assert.Equal(ll, s.LogLikelihood, 3);
            lls[i] = ll;
        }

        int acc = Array.IndexOf(lls, lls.Max());
        var perChar = lls.Select((x, i) => x / item.Choices[i].Length).ToArray();
        int norm = Array.IndexOf(perChar, perChar.Max());
        Assert.Equal((acc, norm), MultipleChoiceEvaluator.Choose(lls, item.Choices));
        var result = MultipleChoiceEvaluator.Evaluate(scorer, [item]);
        Assert.Equal(acc == item.Gold ? 1 : 0, result.Acc);
        Assert.Equal(norm == item.Gold ? 1 : 0, result.AccNorm);
    }

    [Fact]
    public void Acc_norm_divides_by_characters_and_ties_go_first()
    {
        Assert.Equal((0, 1), MultipleChoiceEvaluator.Choose([-10, -12], ["ab", "abcdef"]));
        Assert.Equal((0, 0), MultipleChoiceEvaluator.Choose([-4, -4], ["ab", "cd"]));
    }

    [Fact]
    public void Trailing_context_spaces_move_to_the_continuation()
    {
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        using var scorer = new LogLikelihoodScorer(transformer, model.Tokenizer!, Fp32, 512);
        var a = scorer.Score("Once upon a time there was a ", "girl");
        var b = scorer.Score("Once upon a time there was a", " girl");
        Assert.Equal(a, b);
        Assert.True(a.LogLikelihood < 0);
    }
}
