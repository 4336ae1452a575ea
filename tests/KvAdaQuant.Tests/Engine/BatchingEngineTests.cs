using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// <see cref="BatchingEngine"/>: threads that each drive their own session decode together, every step taking the
/// tokens that queued while the previous one ran, and each sequence gets the bits it gets alone.
/// </summary>
public class BatchingEngineTests
{
    [Theory]
    [InlineData("fp16")]
    [InlineData("k4v2")]
    public void Threads_decoding_together_get_the_bits_of_decoding_alone(string kv)
    {
        using var m = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(m, 2);
        var rng = new Random(9);
        int[][] prompts = [.. new[] { 7, 30, 2, 15 }.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray())];
        const int steps = 10;

        var alone = prompts.Select(p => Greedy(new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(64))), p, steps)).ToArray();

        var engine = new BatchingEngine(transformer);
        var sessions = prompts.Select(_ => new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(64)))).ToArray();
        var together = new float[prompts.Length][][];
        var threads = prompts.Select((p, i) => new Thread(() => together[i] = Greedy(engine.Session(sessions[i]), p, steps))).ToArray();
        foreach (var t in threads)
        {
            t.Start();
        }

        foreach (var t in threads)
        {
            t.Join();
        }

        for (int i = 0; i < prompts.Length; i++)
        {
            for (int s = 0; s < steps; s++)
            {
                Assert.True(alone[i][s].AsSpan().SequenceEqual(together[i][s]), $"{kv}: sequence {i} step {s} differs from decoding it alone");
            }

            sessions[i].Dispose();
        }

        Assert.Equal(prompts.Length * steps, engine.DecodedTokens);
        Assert.True(engine.Steps <= engine.DecodedTokens);
    }

    [Fact]
    public void Steps_that_queue_during_a_prefill_run_as_one()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        var engine = new BatchingEngine(transformer);
        var sessions = Enumerable.Range(0, 4).Select(_ => new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(16)))).ToArray();
        var wrapped = sessions.Select(engine.Session).ToArray();
        foreach (var w in wrapped)
        {
            w.Prefill([1, 5, 9]);
        }

        var expected = sessions.Select((_, i) =>
        {
            using var own = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(16)));
            own.Prefill([1, 5, 9]);
            return own.Decode(20 + i).ToArray();
        }).ToArray();

        // Hold the engine with the fourth session's prefill until the other three have queued a step each.
        Thread[] threads = [];
        engine.Exclusive(() =>
        {
            threads = [.. Enumerable.Range(0, 3).Select(i => new Thread(() => wrapped[i].Decode(20 + i)))];
            foreach (var t in threads)
            {
                t.Start();
            }

            var until = DateTime.UtcNow.AddSeconds(30);
            while (engine.Waiting < 3 && DateTime.UtcNow < until)
            {
                Thread.Sleep(1);
            }
        });
        foreach (var t in threads)
        {
            t.Join();
        }

        Assert.Equal(1, engine.Steps);
        Assert.Equal(3, engine.LargestStep);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(4, sessions[i].Position);
            Assert.True(expected[i].AsSpan().SequenceEqual(sessions[i].Logits), $"sequence {i}");
        }

        // A full cache fails its own step only.
        var small = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(3)));
        var full = engine.Session(small);
        full.Prefill([1, 2, 3]);
        var e = Assert.Throws<KvCacheException>(() => full.Decode(4));
        Assert.Contains("context full", e.Message);
        wrapped[3].Decode(23);
        Assert.True(expected[3].AsSpan().SequenceEqual(sessions[3].Logits));
        using var other = new Transformer(m, 1);
        using var stranger = new InferenceSession(other, KvCacheFactory.Create("fp32", other.CacheLayout(4)));
        Assert.Contains("another Transformer", Assert.Throws<ArgumentException>(() => engine.Session(stranger)).Message);
        foreach (var s in sessions.Append(small))
        {
            s.Dispose();
        }
    }

    private static float[][] Greedy(IDecodeSession session, int[] prompt, int steps)
    {
        var logits = new float[steps][];
        var l = session.Prefill(prompt);
        for (int s = 0; s < steps; s++)
        {
            l = session.Decode(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(l));
            logits[s] = l.ToArray();
        }

        return logits;
    }
}
