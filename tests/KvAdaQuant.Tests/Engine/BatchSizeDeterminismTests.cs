using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// On FP16 / FP32 caches, and quantized ones that quantize each token as it arrives, the prefill batch size changes how
/// the work is split, never the result: logits after a 300-token prefill, and the cached keys and values, are the same
/// bits with batches of 512 (the default there), 64, 7 and 1 (one decode step per token). This is what lets
/// <see cref="InferenceSession.BatchSize"/> default to 512 on those caches while caches with residual windows or
/// per-channel groups keep 64.
/// </summary>
public class BatchSizeDeterminismTests
{
    [Theory]
    [InlineData("stories260K", "fp32")]
    [InlineData("stories3M-q80", "fp16")]
    [InlineData("tiny-llama:q8_0", "fp16")]
    [InlineData("tiny-llama:q4_0", "fp32")]
    [InlineData("tiny-llama-64:f32", "fp16")]
    [InlineData("stories3M-q80", "k4v2")]
    [InlineData("stories260K", "k2v4:sym:g8")]
    [InlineData("stories3M-q80", "k4v2:rot:sink4")]
    [InlineData("tiny-llama-64:q8_0", "k4v2")]
    [InlineData("stories3M-q80", "k16v3")]
    public void Prefill_is_the_same_bits_whatever_the_batch_size(string model, string kv)
    {
        using var dir = new TempDir();
        using var m = Load(model, dir);
        var rng = new Random(5);
        var prompt = Enumerable.Range(0, 300).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();
        using var transformer = new Transformer(m, 2);
        float[]? logits = null;
        float[]? keys = null, values = null;
        foreach (int batch in new[] { 0, 64, 7, 1 })
        {
            var cache = KvCacheFactory.Create(kv, transformer.CacheLayout(320));
            using var session = batch == 0 ? new InferenceSession(transformer, cache) : new InferenceSession(transformer, cache) { BatchSize = batch };
            if (batch == 0)
            {
                Assert.Equal(InferenceSession.InvariantBatchSize(m.Config), session.BatchSize);
            }

            var l = session.Prefill(prompt).ToArray();
            var layer = cache.Layers[m.Config.Layers - 1];
            var k = new float[prompt.Length * m.Config.HeadDim];
            var v = new float[k.Length];
            layer.ReadKeys(m.Config.KvHeads - 1, 0, prompt.Length, k);
            layer.ReadValues(m.Config.KvHeads - 1, 0, prompt.Length, v);
            logits ??= l;
            keys ??= k;
            values ??= v;
            string name = batch == 0 ? "the default batch" : $"batches of {batch}";
            Assert.True(logits.AsSpan().SequenceEqual(l), $"{model} {kv}: logits with {name} differ from the default batch's");
            Assert.True(keys.AsSpan().SequenceEqual(k), $"{model} {kv}: last layer's keys with {name} differ");
            Assert.True(values.AsSpan().SequenceEqual(v), $"{model} {kv}: last layer's values with {name} differ");
        }
    }

    [Theory]
    [InlineData("fp32", true)]
    [InlineData("k4v2", true)]
    [InlineData("k4v2:sink4:rot", true)]
    [InlineData("k4v2:r16", false)]
    [InlineData("k4v2:kpc", false)]
    [InlineData("k16v4:vr8", false)]
    public void Batch_invariance_follows_the_specs(string kv, bool invariant)
    {
        using var cache = KvCacheFactory.Create(kv, new KvLayout(5, 4, 8, 64));
        Assert.Equal(invariant, InferenceSession.IsBatchInvariant(cache));
    }

    [Fact]
    public void Default_batch_is_512_for_small_models_and_capped_by_the_workspace()
    {
        using var small = ModelLoader.Load("stories3M-q80");
        Assert.Equal(512, InferenceSession.InvariantBatchSize(small.Config));

        // Llama-3.2-1B's shape: 2,048 + 2,048 + 2,048 + 3 x 512 + 2,048 + 2 x 8,192 + 64 floats a token = 104.7 KB, so
        // 8 MiB hold 80 tokens; Llama-3.1-8B's (4,096 channels, 14,336 hidden) would hold 28, raised to 64.
        var l1b = SyntheticModelPreset.Find("llama-3.2-1b").Config;
        Assert.Equal(4L * 26_176, Transformer.WorkspaceBytesPerToken(l1b));
        Assert.Equal(80, InferenceSession.InvariantBatchSize(l1b));
        Assert.Equal(64, InferenceSession.InvariantBatchSize(SyntheticModelPreset.Find("llama-3.1-8b").Config));
    }

    [Fact]
    public void Windowed_caches_keep_batches_of_64_and_a_bad_size_is_refused()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create("k4v2:r16", transformer.CacheLayout(64)));
        Assert.Equal(InferenceSession.QuantizedBatchSize, session.BatchSize);
        Assert.Equal(64, session.LogitsBatchSize);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new InferenceSession(transformer, KvCacheFactory.Create("fp16", transformer.CacheLayout(64))) { BatchSize = 0 });
        Assert.Contains("batch size must be at least 1, got 0", ex.Message);
    }

    internal static LlamaModel Load(string model, TempDir dir)
    {
        if (!model.Contains(':'))
        {
            return ModelLoader.Load(model);
        }

        var parts = model.Split(':');
        var type = parts[1] switch { "q8_0" => GgmlType.Q8_0, "q4_0" => GgmlType.Q4_0, _ => GgmlType.F32 };
        var path = dir.File($"{parts[0]}-{parts[1]}.gguf");
        SyntheticModelWriter.Create(SyntheticModelPreset.Find(parts[0]), type, seed: 11).Write(path, threads: 1);
        return ModelLoader.Load(path);
    }
}
