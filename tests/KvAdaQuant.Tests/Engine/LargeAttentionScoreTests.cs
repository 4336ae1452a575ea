using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// Attention scores above ~88 overflow exp() unless the softmax subtracts the row maximum (TensorPrimitives.SoftMax
/// does not). A large query bias (as Qwen2 checkpoints have) must not change a single-position output at all:
/// softmax over one score is 1 whatever the score.
/// </summary>
public class LargeAttentionScoreTests
{
    [Theory]
    [InlineData("fp32")]
    [InlineData("k4v4")]
    public void LargeQueryBiasLeavesPositionZeroUnchanged(string kv)
    {
        using var model = ModelLoader.Load(Fixtures.Stories260K);
        var layers = model.Weights.Layers.ToArray();
        var l0 = layers[0];
        layers[0] = new LayerWeights
        {
            AttentionNorm = l0.AttentionNorm,
            Wq = l0.Wq,
            Wk = l0.Wk,
            Wv = l0.Wv,
            Wo = l0.Wo,
            FfnNorm = l0.FfnNorm,
            W1 = l0.W1,
            W2 = l0.W2,
            W3 = l0.W3,
            Bq = Enumerable.Repeat(3000f, model.Config.QDim).ToArray(),
        };
        var biased = new LlamaModel("biased", "test", model.Config, new ModelWeights(model.Weights.TokenEmbedding, layers, model.Weights.FinalNorm, model.Weights.Output, []), null);
        float[] Logits(LlamaModel m)
        {
            var t = new Transformer(m, 2);
            using var session = new InferenceSession(t, KvCacheFactory.Create(kv, t.CacheLayout(16)));
            return session.Prefill([1]).ToArray();
        }

        var a = Logits(model);
        var b = Logits(biased);
        Assert.All(b, x => Assert.True(float.IsFinite(x)));
        Assert.True(a.Zip(b).All(p => Math.Abs(p.First - p.Second) <= 1e-4f), "one position attends to itself with weight 1");
    }

    [Fact]
    public void SamplerHandlesLogitsFarAboveExpRange()
    {
        var logits = new float[] { 1000f, 990f, -5f };
        var sampler = new Sampler(temperature: 0.5f, topK: 0, topP: 1f, seed: 1);
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal(0, sampler.Sample(logits));
        }
    }
}
