using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// Several sequences in one forward pass (<see cref="BatchDecoder"/>, the multi-sequence
/// <see cref="Transformer.Forward(ReadOnlySpan{int}, ReadOnlySpan{int}, IReadOnlyList{IKvCache}, Span{float})"/>): each
/// sequence gets the same bits as alone, on every cache kind (one token per sequence per step appends exactly as a
/// single decode does), and bad batches fail by name before any cache changes.
/// </summary>
public class MultiSequenceDecodeTests
{
    [Theory]
    [InlineData("stories260K", "fp32")]
    [InlineData("stories3M-q80", "fp16")]
    [InlineData("stories3M-q80", "k4v2")]
    [InlineData("stories3M-q80", "k4v2:r16")]
    [InlineData("tiny-llama:q8_0", "k4v2")]
    [InlineData("tiny-llama:q4_0", "fp32")]
    [InlineData("tiny-llama-64:q8_0", "k4v2:kpc")]
    [InlineData("tiny-llama-64:f32", "fp16")]
    public void Batched_decode_gives_each_sequence_its_own_bits(string model, string kv)
    {
        using var dir = new TempDir();
        using var m = BatchSizeDeterminismTests.Load(model, dir);
        var rng = new Random(17);
        int[][] prompts = [.. new[] { 5, 40, 17, 1, 23 }.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray())];
        const int steps = 6;
        using var transformer = new Transformer(m, 2);

        // Alone: each sequence prefilled and decoded greedily by itself.
        var alone = new float[prompts.Length][][];
        var chosen = new int[prompts.Length][];
        for (int i = 0; i < prompts.Length; i++)
        {
            using var s = new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(64)));
            var l = s.Prefill(prompts[i]);
            alone[i] = new float[steps][];
            chosen[i] = new int[steps];
            for (int step = 0; step < steps; step++)
            {
                chosen[i][step] = ArgMax(l);
                l = s.Decode(chosen[i][step]);
                alone[i][step] = l.ToArray();
            }
        }

        // Together: the same prefills, then every step one forward pass over all five sequences.
        var sessions = prompts.Select(_ => new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(64)))).ToArray();
        try
        {
            for (int i = 0; i < prompts.Length; i++)
            {
                sessions[i].Prefill(prompts[i]);
            }

            var decoder = new BatchDecoder(transformer);
            for (int step = 0; step < steps; step++)
            {
                decoder.Decode(sessions, chosen.Select(c => c[step]).ToArray());
                for (int i = 0; i < prompts.Length; i++)
                {
                    Assert.Equal(prompts[i].Length + step + 1, sessions[i].Position);
                    Assert.True(alone[i][step].AsSpan().SequenceEqual(sessions[i].Logits), $"{model} {kv}: sequence {i} step {step}: batched logits differ from decoding it alone");
                }
            }
        }
        finally
        {
            foreach (var s in sessions)
            {
                s.Dispose();
            }
        }
    }

    [Theory]
    [InlineData("stories3M-q80", "fp16")]
    [InlineData("tiny-llama:q8_0", "k4v2")]
    public void Several_prompts_in_one_pass_match_their_own_prefills(string model, string kv)
    {
        using var dir = new TempDir();
        using var m = BatchSizeDeterminismTests.Load(model, dir);
        var rng = new Random(3);
        int[] counts = [7, 1, 12];
        int[][] prompts = [.. counts.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray())];
        using var transformer = new Transformer(m, 2);
        int vocab = m.Config.VocabSize;
        var caches = counts.Select(_ => KvCacheFactory.Create(kv, transformer.CacheLayout(32))).ToArray();
        try
        {
            var together = new float[counts.Length * vocab];
            transformer.Forward(prompts.SelectMany(p => p).ToArray(), counts, caches, together);
            for (int i = 0; i < counts.Length; i++)
            {
                using var own = KvCacheFactory.Create(kv, transformer.CacheLayout(32));
                var logits = new float[vocab];
                transformer.Forward(prompts[i], 0, own, logits, allLogits: false);
                Assert.Equal(counts[i], caches[i].Length);
                Assert.True(logits.AsSpan().SequenceEqual(together.AsSpan(i * vocab, vocab)), $"{model} {kv}: prompt {i}'s logits differ from its own prefill");
            }
        }
        finally
        {
            foreach (var c in caches)
            {
                c.Dispose();
            }
        }
    }

    [Fact]
    public void Bad_batches_fail_by_name_and_leave_the_caches_alone()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        using var other = new Transformer(m, 1);
        using var a = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(8)));
        using var b = new InferenceSession(transformer, KvCacheFactory.Create("fp16", transformer.CacheLayout(4)));
        using var c = new InferenceSession(other, KvCacheFactory.Create("fp32", other.CacheLayout(8)));
        a.Prefill([1, 5, 9]);
        b.Prefill([1, 7, 8, 9]);
        var decoder = new BatchDecoder(transformer);

        var e = Assert.Throws<ArgumentException>(() => decoder.Decode([a, b], [5]));
        Assert.Contains("1 tokens for 2 sessions", e.Message);
        e = Assert.Throws<ArgumentException>(() => decoder.Decode([a, c], [5, 6]));
        Assert.Contains("session 1 runs on another Transformer", e.Message);
        e = Assert.Throws<ArgumentException>(() => decoder.Decode([a, a], [5, 6]));
        Assert.Contains("sequences 0 and 1 share one cache", e.Message);
        e = Assert.Throws<ArgumentException>(() => decoder.Decode([], []));
        Assert.Contains("no sessions", e.Message);

        // b is full (4 of 4): the step fails naming it, and a gains nothing.
        var full = Assert.Throws<KvCacheException>(() => decoder.Decode([a, b], [5, 6]));
        Assert.Contains("context full in sequence 1: 4 + 1 tokens exceed the context of 4", full.Message);
        Assert.Equal(3, a.Position);
        Assert.Equal(4, b.Position);

        // Steps with prompt chunks: the counts must match the sessions and the tokens; a chunk that does not fit names its
        // sequence before any cache changes.
        e = Assert.Throws<ArgumentException>(() => decoder.Step([a, b], [2], [5, 6]));
        Assert.Contains("1 token counts for 2 sessions", e.Message);
        e = Assert.Throws<ArgumentException>(() => decoder.Step([a], [2], [5, 6, 7]));
        Assert.Contains("add up to 2 tokens but 3 were given", e.Message);
        e = Assert.Throws<ArgumentException>(() => decoder.Step([a, c], [2, 1], [5, 6, 7]));
        Assert.Contains("session 1 runs on another Transformer", e.Message);
        using var d = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(8)));
        full = Assert.Throws<KvCacheException>(() => decoder.Step([d, a], [2, 6], [5, 6, 1, 2, 3, 4, 5, 6]));
        Assert.Contains("context full in sequence 1: 3 + 6 tokens exceed the context of 8", full.Message);
        Assert.Equal(0, d.Position);
        Assert.Equal(3, a.Position);

        var logits = new float[2 * m.Config.VocabSize];
        e = Assert.Throws<ArgumentException>(() => transformer.Forward(new[] { 1, 2, 3 }, new[] { 1, 1 }, new[] { a.Cache, c.Cache }, logits));
        Assert.Contains("add up to 2 tokens but 3 were given", e.Message);
        e = Assert.Throws<ArgumentException>(() => transformer.Forward(new[] { 1, 2 }, new[] { 2, 0 }, new[] { a.Cache, c.Cache }, logits));
        Assert.Contains("sequence 1 has 0 tokens", e.Message);
        e = Assert.Throws<ArgumentException>(() => transformer.Forward(new[] { 1, 2 }, new[] { 1, 1 }, new[] { a.Cache }, logits));
        Assert.Contains("1 caches for 2 sequences", e.Message);
        e = Assert.Throws<ArgumentException>(() => transformer.Forward(new[] { 1, 2 }, new[] { 1, 1 }, new[] { a.Cache, c.Cache }, new float[m.Config.VocabSize]));
        Assert.Contains("logits buffer holds", e.Message);
        Assert.Equal(3, a.Position);

        // And a good step after the failures works.
        decoder.Decode([a], [5]);
        Assert.Equal(4, a.Position);
    }

    private static int ArgMax(ReadOnlySpan<float> x) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(x);
}
