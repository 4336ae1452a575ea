using KvAdaQuant.Analysis;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Analysis;

/// <summary>The capture sees exactly what the unquantized cache stores.</summary>
public class ForwardCaptureTests
{
    [Theory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public void CaptureEqualsKeysAndValuesStoredByTheUnquantizedCache(string name)
    {
        using var model = ModelLoader.Load(name);
        var c = model.Config;
        var tokens = model.Tokenizer!.Encode("Once upon a time there was a little girl named Lily. She loved to play outside in the park with her friends every day.", addBos: true);
        Assert.True(tokens.Count > 20);
        var transformer = new Transformer(model, 2);
        var capture = new ForwardCapture(c, tokens.Count);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(tokens.Count), half: false)) { BatchSize = 7 };
        session.Prefill(tokens.ToArray(), capture);
        Assert.Equal(tokens.Count, capture.Length);
        var stored = new float[tokens.Count * c.HeadDim];
        for (int l = 0; l < c.Layers; l++)
        {
            for (int g = 0; g < c.KvHeads; g++)
            {
                session.Cache.Layers[l].ReadKeys(g, 0, tokens.Count, stored);
                Assert.Equal(stored, capture.Head(l, KvTensorKind.Keys, g));
                session.Cache.Layers[l].ReadValues(g, 0, tokens.Count, stored);
                Assert.Equal(stored, capture.Head(l, KvTensorKind.Values, g));
            }
        }
    }

    [Fact]
    public void PreRopeKeysAreTheRotatedKeysUnrotated()
    {
        // RoPE rotates each interleaved pair (2i, 2i+1): position 0 is unchanged and every pair keeps its length.
        using var model = ModelLoader.Load("stories260K");
        var c = model.Config;
        var tokens = model.Tokenizer!.Encode("The cat sat on the mat and looked at the bird.", addBos: true);
        var transformer = new Transformer(model, 2);
        var capture = new ForwardCapture(c, tokens.Count);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(tokens.Count), half: false));
        session.Prefill(tokens.ToArray(), capture);
        for (int l = 0; l < c.Layers; l++)
        {
            var pre = capture.Tensor(l, KvTensorKind.KeysPreRope);
            var post = capture.Tensor(l, KvTensorKind.Keys);
            Assert.Equal(pre[..c.KvDim].ToArray(), post[..c.KvDim].ToArray());
            bool rotated = false;
            for (int i = 0; i < pre.Length; i += 2)
            {
                double a = Math.Sqrt((pre[i] * pre[i]) + (pre[i + 1] * pre[i + 1]));
                double b = Math.Sqrt((post[i] * post[i]) + (post[i + 1] * post[i + 1]));
                Assert.True(Math.Abs(a - b) <= 1e-4 * (1 + a), $"layer {l} pair {i / 2}: |pre| {a} vs |post| {b}");
                rotated |= Math.Abs(pre[i] - post[i]) > 1e-3;
            }

            Assert.True(rotated, $"layer {l}: keys after RoPE equal the keys before it");
        }
    }

    [Fact]
    public void AttentionAndResidualAreRecordedForEveryLayer()
    {
        using var model = ModelLoader.Load("stories260K");
        var c = model.Config;
        int[] tokens = [1, 400, 401, 402, 403, 404];
        var transformer = new Transformer(model, 2);
        var capture = new ForwardCapture(c, tokens.Length, keysAndValues: false);
        var logits = new float[c.VocabSize];
        using var cache = new FullPrecisionKvCache(transformer.CacheLayout(tokens.Length), half: false);
        transformer.Forward(tokens, 0, cache, logits, allLogits: false, capture);
        Assert.Throws<InvalidOperationException>(() => capture.Tensor(0, KvTensorKind.Keys));
        for (int l = 0; l < c.Layers; l++)
        {
            Assert.Equal(tokens.Length * c.QDim, capture.Attention(l).Length);
            Assert.Contains(capture.Residual(l).ToArray(), x => x != 0);
        }

        // The last layer's residual, final-normed and projected, gives the logits: check one via the tied embedding.
        var x = capture.Residual(c.Layers - 1)[((tokens.Length - 1) * c.Dim)..].ToArray();
        var normed = new float[c.Dim];
        KvAdaQuant.Numerics.Kernels.RmsNorm(x, model.Weights.FinalNorm, c.NormEps, normed);
        var row = new float[c.Dim];
        model.Weights.Output.DequantizeRow(5, row);
        double want = normed.Zip(row).Sum(p => (double)p.First * p.Second);
        Assert.True(Math.Abs(want - logits[5]) < 1e-3 * (1 + Math.Abs(want)), $"logit 5: {logits[5]} vs {want} from the captured residual");
    }
}
