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
    [InlineData("fp16", 0)]
    [InlineData("k4v2", 0)]
    [InlineData("k4v2", 4)] // prompts of up to 30 tokens in chunks of 4, joining the other threads' decode steps
    [InlineData("k4v2:r8", 8)] // a residual window: the chunks are where a prefill alone cuts the prompt
    public void Threads_decoding_together_get_the_bits_of_decoding_alone(string kv, int batchSize)
    {
        using var m = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(m, 2);
        var rng = new Random(9);
        int[][] prompts = [.. new[] { 7, 30, 2, 15 }.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray())];
        const int steps = 10;
        InferenceSession NewSession()
        {
            var cache = KvCacheFactory.Create(kv, transformer.CacheLayout(64));
            return batchSize > 0 ? new InferenceSession(transformer, cache) { BatchSize = batchSize } : new InferenceSession(transformer, cache);
        }

        var alone = prompts.Select(p => Greedy(NewSession(), p, steps)).ToArray();

        var engine = new BatchingEngine(transformer);
        var sessions = prompts.Select(_ => NewSession()).ToArray();
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
        Assert.Equal(prompts.Sum(p => p.Length), engine.PromptTokens);
        int chunks = prompts.Sum(p => (p.Length + sessions[0].BatchSize - 1) / sessions[0].BatchSize);
        Assert.True(engine.Steps <= engine.DecodedTokens + chunks);
    }

    [Fact]
    public void A_prompt_joins_the_decode_steps_one_chunk_at_a_time()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        var engine = new BatchingEngine(transformer);
        var rng = new Random(3);
        int[] prompt = [.. Enumerable.Range(0, 40).Select(_ => rng.Next(3, m.Config.VocabSize))];
        using var decoding = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(64)));
        using var prefilling = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(64))) { BatchSize = 16 };
        engine.Session(decoding).Prefill([1, 5, 9]);
        long steps = engine.Steps;

        using var ownDecode = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(64)));
        ownDecode.Prefill([1, 5, 9]);
        var expectedDecode = ownDecode.Decode(20).ToArray();
        using var ownPrefill = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(64))) { BatchSize = 16 };
        var expectedPrefill = ownPrefill.Prefill(prompt).ToArray();

        // Hold the engine until the decode token and the prompt's first chunk have queued: they run in one step, then the
        // prompt's two other chunks (16 + 16 + 8 tokens) run in a step each.
        Thread[] threads = [];
        engine.Exclusive(() =>
        {
            threads = [new Thread(() => engine.Decode(decoding, 20)), new Thread(() => engine.Prefill(prefilling, prompt))];
            foreach (var t in threads)
            {
                t.Start();
            }

            WaitFor(engine, 2);
        });
        foreach (var t in threads)
        {
            t.Join();
        }

        Assert.Equal(3, engine.Steps - steps);
        Assert.Equal(1, engine.MixedSteps);
        Assert.Equal(2, engine.LargestStep);
        Assert.Equal(40 + 3, engine.PromptTokens);
        Assert.Equal(1, engine.DecodedTokens);
        Assert.Equal(40, prefilling.Position);
        Assert.True(expectedPrefill.AsSpan().SequenceEqual(prefilling.Logits), "the prompt's logits differ from its prefill alone");
        Assert.True(expectedDecode.AsSpan().SequenceEqual(decoding.Logits), "the decode step's logits differ from decoding alone");
    }

    [Fact]
    public void A_step_takes_prompt_chunks_up_to_its_limit()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        var engine = new BatchingEngine(transformer) { PromptTokensPerStep = 20 };
        var rng = new Random(4);
        int[][] prompts = [[.. Enumerable.Range(0, 32).Select(_ => rng.Next(3, m.Config.VocabSize))], [.. Enumerable.Range(0, 20).Select(_ => rng.Next(3, m.Config.VocabSize))]];
        var sessions = prompts.Select(_ => new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(64))) { BatchSize = 16 }).ToArray();
        var expected = prompts.Select(p =>
        {
            using var own = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(64))) { BatchSize = 16 };
            return own.Prefill(p).ToArray();
        }).ToArray();

        // Chunks of 16: two never fit in 20 tokens, so every step runs one (two + two chunks); the last chunk of the second
        // prompt (4 tokens) may share a step with the first prompt's 16.
        Thread[] threads = [];
        engine.Exclusive(() =>
        {
            threads = [.. prompts.Select((p, i) => new Thread(() => engine.Prefill(sessions[i], p)))];
            foreach (var t in threads)
            {
                t.Start();
            }

            WaitFor(engine, 2);
        });
        foreach (var t in threads)
        {
            t.Join();
        }

        Assert.InRange(engine.Steps, 3, 4);
        Assert.Equal(52, engine.PromptTokens);
        Assert.Equal(0, engine.DecodedTokens);
        for (int i = 0; i < 2; i++)
        {
            Assert.True(expected[i].AsSpan().SequenceEqual(sessions[i].Logits), $"prompt {i}");
            sessions[i].Dispose();
        }

        // A prompt that does not fit fails with the error a prefill alone gives at that chunk.
        using var small = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(20))) { BatchSize = 16 };
        var e = Assert.Throws<KvCacheException>(() => engine.Prefill(small, prompts[0]));
        Assert.Contains("context full: 16 + 16 tokens exceed the context of 20", e.Message);
        Assert.Equal(16, small.Position);
    }

    private static void WaitFor(BatchingEngine engine, int waiting)
    {
        var until = DateTime.UtcNow.AddSeconds(30);
        while (engine.Waiting < waiting && DateTime.UtcNow < until)
        {
            Thread.Sleep(1);
        }
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

        long steps = engine.Steps;

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

            WaitFor(engine, 3);
        });
        foreach (var t in threads)
        {
            t.Join();
        }

        Assert.Equal(steps + 1, engine.Steps);
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

    [Fact]
    public void An_idle_session_is_not_awaited_by_the_next_step()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        var engine = new BatchingEngine(transformer);
        using var a = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(16)));
        using var b = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(16)));
        var wa = engine.Session(a);
        var wb = engine.Session(b);
        Assert.Equal(0, engine.AwaitedSessions);
        wa.Prefill([1, 5, 9]);
        Assert.Equal(1, engine.AwaitedSessions); // the step just run was a's: the next leader would wait for it
        wa.Idle();
        Assert.Equal(0, engine.AwaitedSessions);
        wa.Idle(); // twice is harmless
        wb.Prefill([1, 7]);
        wb.Decode(3);
        Assert.Equal(1, engine.AwaitedSessions);

        // Idle changes nothing in what the sessions compute: a decodes on after it.
        var expected = wa.Decode(4).ToArray();
        using var alone = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(16)));
        alone.Prefill([1, 5, 9]);
        Assert.True(expected.AsSpan().SequenceEqual(alone.Decode(4)));

        using var other = new Transformer(m, 1);
        using var stranger = new InferenceSession(other, KvCacheFactory.Create("fp32", other.CacheLayout(4)));
        Assert.Contains("another Transformer", Assert.Throws<ArgumentException>(() => engine.Idle(stranger)).Message);
        ((IDecodeSession)alone).Idle(); // a session alone has nothing to tell
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
