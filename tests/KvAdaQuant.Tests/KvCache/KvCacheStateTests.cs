using System.Runtime.CompilerServices;
using System.Text;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>
/// <see cref="SessionStateFile"/> and <see cref="KvCacheState"/>: a state saved after a prompt and loaded into a fresh
/// cache of the same plan continues bit for bit as the original; the file holds exactly the documented header, the
/// tokens, the logits and the caches' stored bytes; damaged or foreign files are refused naming the problem.
/// </summary>
public class KvCacheStateTests
{
    private const string Story =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. " +
        "One day, she saw a big red ball under a tree. She ran to the ball and kicked it very high. The ball flew over the " +
        "fence and landed in the garden of an old man. Lily was scared, but she went to the old man and said sorry. The old " +
        "man smiled and gave the ball back to her. They became good friends and played together every day after that.";

    [Theory]
    [InlineData("stories260K", "fp32", 40, 128, 128)]
    [InlineData("stories260K", "fp16", 40, 128, 64)]
    [InlineData("stories3M-q80", "fp32", 33, 128, 128)]
    [InlineData("stories3M-q80", "fp16", 33, 128, 128)]
    [InlineData("stories3M-q80", "k4v2", 50, 128, 128)]
    [InlineData("stories3M-q80", "k4v2", 50, 256, 100)]
    [InlineData("stories260K", "k4v2", 40, 128, 128)]
    [InlineData("stories3M-q80", "k2v4:r16:sink4", 45, 128, 128)]
    [InlineData("stories3M-q80", "k2v4:r16:sink4", 12, 128, 128)]
    [InlineData("stories3M-q80", "k4v2:kpc:kg16:r4", 19, 128, 128)]
    [InlineData("stories3M-q80", "k4v2:kpc:kg16:r4", 20, 128, 128)]
    [InlineData("stories3M-q80", "k4v2:kpc:kg16:r4", 21, 128, 128)]
    [InlineData("stories3M-q80", "k4v2:kpc:kg16:r4", 52, 128, 128)]
    [InlineData("stories3M-q80", "k8v8:pc:g8:sym", 33, 128, 128)]
    [InlineData("stories3M-q80", "k3v1.58:g16", 37, 128, 128)]
    [InlineData("stories3M-q80", "mixed", 41, 128, 128)]
    [InlineData("stories3M-q80", "k4v2:rot:r8", 30, 128, 128)]
    [InlineData("stories3M-q80", "k2v4:krot:kpc:kg16", 40, 128, 128)]
    public void A_loaded_state_continues_bit_for_bit_like_the_original(string model, string kv, int promptLength, int ctx, int loadCtx)
    {
        using var m = ModelLoader.Load(model);
        using var transformer = new Transformer(m, 1);
        var plan = Plan(kv, m.Config.Layers);
        var prompt = Prompt(m, promptLength);
        using var original = new InferenceSession(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(ctx)));
        var prefillLogits = original.Prefill(prompt).ToArray();
        using var file = new MemoryStream();
        long written = SessionStateFile.Save(file, original, prompt);
        Assert.Equal(file.Length, written);
        Assert.Equal(ExpectedFileBytes(m, original.Cache, prompt.Length, appData: string.Empty), file.Length);

        using var restored = new InferenceSession(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(loadCtx)));
        restored.Prefill(prompt.AsSpan(0, 3)); // whatever the fresh cache held before is replaced
        file.Position = 0;
        var state = SessionStateFile.Load(file, restored, "mem");
        Assert.Equal(prompt, state.Tokens);
        Assert.Equal(file.Length, state.Bytes);
        Assert.Equal(plan.Name, state.KvDescription);
        Assert.Equal(original.Cache.Length, restored.Cache.Length);
        Assert.Equal(original.Cache.ByteCount, restored.Cache.ByteCount);
        AssertBitEqual(prefillLogits, restored.Logits, "restored logits");

        // The same greedy continuation, logits compared bit for bit at every step.
        var sampler = new Sampler();
        int a = sampler.Sample(original.Logits), b = sampler.Sample(restored.Logits);
        for (int step = 0; step < 24; step++)
        {
            Assert.Equal(a, b);
            var la = original.Decode(a);
            var lb = restored.Decode(b);
            AssertBitEqual(la, lb, $"step {step}");
            a = sampler.Sample(la);
            b = sampler.Sample(lb);
        }

        Assert.Equal(original.Cache.ByteCount, restored.Cache.ByteCount);
    }

    [Fact]
    public void Int8_attention_keys_in_tiles_save_and_load_as_rows_in_either_direction()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(m, 1);
        var plan = KvPlan.Parse("k4v2", m.Config.Layers);
        var layout = transformer.CacheLayout(128);
        QuantizedKvCache Tiled() => new(plan, layout, AttentionPrecision.Int8);

        // The same rows into a cache whose keys lie in tiles and one whose keys lie row after row: the same file data.
        using var tiledCache = Tiled();
        using var plainCache = (QuantizedKvCache)KvCacheFactory.Create(plan, layout);
        var rng = new Random(5);
        var rows = Enumerable.Range(0, 70 * layout.KvDim).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        foreach (var c in new[] { tiledCache, plainCache })
        {
            foreach (var l in c.Layers)
            {
                l.Append(rows, rows, 70);
            }
        }

        using var tiledSession = new InferenceSession(transformer, tiledCache);
        using var plainSession = new InferenceSession(transformer, plainCache);
        var tokens = Enumerable.Repeat(5, 70).ToArray();
        var fromTiled = Save(tiledSession, tokens);
        var fromPlain = Save(plainSession, tokens);
        Assert.Equal(fromPlain, fromTiled);
        using var intoTiled = new InferenceSession(transformer, Tiled());
        SessionStateFile.Load(new MemoryStream(fromPlain), intoTiled, "plain");
        Assert.Equal(fromPlain, Save(intoTiled, tokens));

        // A prompt run with int8 attention, saved and loaded: the int8 decode goes on bit for bit.
        if (tiledCache.Int8Layers == 0)
        {
            return; // this CPU has no int8 kernel: the keys were never tiled (the row layout is covered above)
        }

        var prompt = Prompt(m, 70);
        using var original = new InferenceSession(transformer, Tiled());
        original.Prefill(prompt);
        using var restored = new InferenceSession(transformer, Tiled());
        SessionStateFile.Load(new MemoryStream(Save(original, prompt)), restored, "tiled");
        var sampler = new Sampler();
        int t = sampler.Sample(original.Logits);
        for (int step = 0; step < 8; step++)
        {
            var la = original.Decode(t).ToArray();
            var lb = restored.Decode(t);
            AssertBitEqual(la, lb, $"step {step}");
            t = sampler.Sample(la);
        }
    }

    [Fact]
    public void A_k4v2_state_is_a_quarter_of_an_fp16_one_but_for_the_same_header_tokens_and_logits()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(m, 1);
        var prompt = Prompt(m, 96);
        long Size(string kv, out long data)
        {
            using var s = new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(128)));
            s.Prefill(prompt);
            data = s.Cache.ByteCount;
            return Save(s, prompt).Length;
        }

        long fp16 = Size("fp16", out long fp16Data), k4v2 = Size("k4v2", out long k4v2Data);

        // fp16: 6 layers x (K + V) x 2 heads x 32 channels x 2 bytes per token; k4v2 (groups of 32): K 16 bytes of codes +
        // 4 of scale and zero, V 8 + 4, per head and token.
        Assert.Equal(96L * 6 * 2 * 2 * 32 * 2, fp16Data);
        Assert.Equal(96L * 6 * 2 * (20 + 12), k4v2Data);
        Assert.Equal(4 * k4v2Data, fp16Data);
        // The same header (the descriptions "fp16" and "k4v2" are both 4 bytes), tokens and logits around them.
        long overhead = fp16 - fp16Data;
        Assert.Equal(overhead, k4v2 - k4v2Data);
        Assert.Equal(4 * (k4v2 - overhead), fp16 - overhead);
        Assert.True(fp16 > 3 * k4v2, $"fp16 {fp16} bytes, k4v2 {k4v2}"); // 96 tokens: the 16 KiB of logits weigh
    }

    [Fact]
    public void Another_model_is_refused_naming_the_field()
    {
        using var small = ModelLoader.Load("stories260K");
        using var t1 = new Transformer(small, 1);
        using var s1 = new InferenceSession(t1, KvCacheFactory.Create("fp16", t1.CacheLayout(64)));
        var prompt = Prompt(small, 10);
        s1.Prefill(prompt);
        var file = Save(s1, prompt);

        using var big = ModelLoader.Load("stories3M-q80");
        using var t2 = new Transformer(big, 1);
        using var s2 = new InferenceSession(t2, KvCacheFactory.Create("fp16", t2.CacheLayout(64)));
        var e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(file), s2, "small.kvstate"));
        Assert.Contains("small.kvstate: the state was saved with another model (stories260K.bin): dim is 64 in the file but 192 in stories3M-q80.bin", e.Message);
    }

    [Fact]
    public void A_model_of_the_same_shape_with_other_weights_is_refused_by_the_weights_hash()
    {
        using var a = ModelLoader.Load("stories260K");
        using var b = ModelLoader.Load("stories260K");
        b.Weights.FinalNorm[7] += 0.5f;
        using var ta = new Transformer(a, 1);
        using var tb = new Transformer(b, 1);
        using var sa = new InferenceSession(ta, KvCacheFactory.Create("fp32", ta.CacheLayout(64)));
        using var sb = new InferenceSession(tb, KvCacheFactory.Create("fp32", tb.CacheLayout(64)));
        var prompt = Prompt(a, 10);
        sa.Prefill(prompt);
        var e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(Save(sa, prompt)), sb, "f"));
        Assert.Contains("weights_sha256 is ", e.Message);
        Assert.Equal(0, sb.Cache.Length);
    }

    [Fact]
    public void The_same_model_with_another_vocabulary_is_refused_by_the_vocabulary_hash()
    {
        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        using var saved = new InferenceSession(t, KvCacheFactory.Create("fp32", t.CacheLayout(64)));
        var prompt = Prompt(m, 10);
        saved.Prefill(prompt);
        var file = Save(saved, prompt);

        m.Tokenizer = new OneTokenRenamed(m.Tokenizer!, 300);
        using var other = new InferenceSession(t, KvCacheFactory.Create("fp32", t.CacheLayout(64)));
        var e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(file), other, "v"));
        Assert.Contains("v: the state was saved with another model (stories260K.bin): vocabulary_sha256 is ", e.Message);
    }

    [Fact]
    public void Another_plan_is_refused_naming_the_layer_and_both_specs_and_the_cache_is_left_as_it_was()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        using var t = new Transformer(m, 1);
        var prompt = Prompt(m, 20);
        using var saved = new InferenceSession(t, KvCacheFactory.Create("k4v2", t.CacheLayout(64)));
        saved.Prefill(prompt);
        var file = Save(saved, prompt);

        using var other = new InferenceSession(t, KvCacheFactory.Create("k2v4", t.CacheLayout(64)));
        other.Prefill(prompt.AsSpan(0, 5));
        long before = other.Cache.ByteCount;
        var e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(file), other, "p"));
        Assert.Contains("another KV plan (k4v2): layer 0 holds K 4:gauto:pt:asym:r0:sink0, V 2:gauto:pt:asym:r0:sink0 in the file but K 2:gauto:pt:asym:r0:sink0, V 4:gauto:pt:asym:r0:sink0 in this cache (k2v4)", e.Message);
        Assert.Equal(5, other.Cache.Length);
        Assert.Equal(before, other.Cache.ByteCount);

        var mixed = Plan("mixed", m.Config.Layers);
        var almost = new KvPlan(mixed.Layers.Select((l, i) => i == 4 ? l with { V = l.V with { Residual = 1 } } : l).ToArray(), "almost", "test");
        using var mixedSession = new InferenceSession(t, KvCacheFactory.Create(mixed, t.CacheLayout(64)));
        mixedSession.Prefill(prompt);
        using var almostSession = new InferenceSession(t, KvCacheFactory.Create(almost, t.CacheLayout(64)));
        e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(Save(mixedSession, prompt)), almostSession, "p"));
        Assert.Contains("layer 4 holds K ", e.Message);
        Assert.Contains(":r7:sink0 in the file but K ", e.Message);
        Assert.Contains(":r1:sink0 in this cache (almost)", e.Message);

        // The same widths rotated or not are other plans: the rows are stored differently.
        using var rotated = new InferenceSession(t, KvCacheFactory.Create("k4v2:rot", t.CacheLayout(64)));
        e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(file), rotated, "p"));
        Assert.Contains("layer 0 holds K 4:gauto:pt:asym:r0:sink0, V 2:gauto:pt:asym:r0:sink0 in the file but K 4:gauto:pt:asym:r0:sink0:rot, V 2:gauto:pt:asym:r0:sink0:rot in this cache (k4v2:rot)", e.Message);

        using var fp16 = new InferenceSession(t, KvCacheFactory.Create("fp16", t.CacheLayout(64)));
        e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(file), fp16, "p"));
        Assert.Contains("layer 0 holds K 4:gauto:pt:asym:r0:sink0, V 2:gauto:pt:asym:r0:sink0 in the file but K fp16, V fp16 in this cache (fp16)", e.Message);
    }

    [Fact]
    public void A_state_longer_than_the_context_is_refused_naming_ctx()
    {
        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        var prompt = Prompt(m, 40);
        using var saved = new InferenceSession(t, KvCacheFactory.Create("k4v2", t.CacheLayout(128)));
        saved.Prefill(prompt);
        using var small = new InferenceSession(t, KvCacheFactory.Create("k4v2", t.CacheLayout(32)));
        var e = Assert.Throws<KvCacheException>(() => SessionStateFile.Load(new MemoryStream(Save(saved, prompt)), small, "c"));
        Assert.Contains("the state holds 40 positions (saved with a context of 128) but this cache's context holds 32 (--ctx)", e.Message);
    }

    [Fact]
    public void Damaged_files_are_refused_naming_what_is_wrong_and_leave_the_cache_as_it_was()
    {
        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        var prompt = Prompt(m, 30);
        using var saved = new InferenceSession(t, KvCacheFactory.Create("k4v2:r8", t.CacheLayout(64)));
        saved.Prefill(prompt);
        var file = Save(saved, prompt);
        using var target = new InferenceSession(t, KvCacheFactory.Create("k4v2:r8", t.CacheLayout(64)));
        target.Prefill(prompt.AsSpan(0, 4));

        string Refused(byte[] bytes, bool seekable = true)
        {
            Stream s = seekable ? new MemoryStream(bytes) : new ForwardOnlyStream(bytes);
            var e = Assert.Throws<InvalidDataException>(() => SessionStateFile.Load(s, target, "x.kvstate"));
            return e.Message;
        }

        Assert.Contains("x.kvstate: not a kvaq state file (it starts with \"GGUF\\x03\\x00\\x00\\x00\"", Refused([.. "GGUF"u8, 3, 0, 0, 0, 0, 0, 0, 0]));
        Assert.Contains("not a kvaq state file (it starts with nothing (an empty file)", Refused([]));
        Assert.Equal(4, target.Cache.Length);

        var newer = (byte[])file.Clone();
        newer[8] = 2;
        Assert.Contains("x.kvstate: state file version 2 was written by a newer kvaq; this one reads version 1", Refused(newer));

        long dataStart = file.Length - saved.Cache.ByteCount - SessionStateFile.ChecksumBytes;
        string cut = Refused(file[..(int)(dataStart + 100)]);
        Assert.Contains($"x.kvstate: truncated state file: {dataStart + 100:N0} bytes, but its header describes {file.Length:N0}; it ends in the layer 0 K data (offsets {dataStart:N0}..", cut);
        cut = Refused(file[..^10]);
        Assert.Contains("it ends in the checksum", cut);
        cut = Refused(file[..20]);
        Assert.Contains("x.kvstate: truncated state file: the model fingerprint section needs", cut);
        Assert.Equal(4, target.Cache.Length);

        var flipped = (byte[])file.Clone();
        flipped[dataStart + 5] ^= 0x10;
        Assert.Contains("x.kvstate: corrupt state file: the SHA-256 checksum at offset", Refused(flipped));
        Assert.Equal(4, target.Cache.Length);
        Assert.Contains("x.kvstate: corrupt state file: 3 bytes after the checksum", Refused([.. file, 1, 2, 3]));

        // Without seeking, the damage shows while the data is read, which leaves the cache empty.
        cut = Refused(file[..(int)(dataStart + 100)], seekable: false);
        Assert.Contains($"x.kvstate: truncated state file: the layer 0 K section needs ", cut);
        Assert.Equal(0, target.Cache.Length);
        target.Prefill(prompt.AsSpan(0, 4));
        Assert.Contains("corrupt state file: the SHA-256 checksum at offset", Refused(flipped, seekable: false));
        Assert.Equal(0, target.Cache.Length);

        // And the intact file still loads.
        SessionStateFile.Load(new ForwardOnlyStream(file), target, "x.kvstate");
        Assert.Equal(30, target.Cache.Length);
    }

    [Fact]
    public void A_forged_token_count_is_refused_without_allocating_it()
    {
        // Found by LoaderFuzzTests: a context size and a token count overwritten with large values (here 2^31-1 and 10^8)
        // made the loader allocate the count's array (400 MB here, 8 GB at most) before finding the file too short.
        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        var prompt = Prompt(m, 6);
        using var saved = new InferenceSession(t, KvCacheFactory.Create("k4v2", t.CacheLayout(32)));
        saved.Prefill(prompt);
        var file = Save(saved, prompt);

        // Walk the header to the plan's context size and the token count.
        int p = 12;
        int Int()
        {
            int v = BitConverter.ToInt32(file, p);
            p += 4;
            return v;
        }

        void Str()
        {
            int length = Int();
            p += length;
        }

        int fields = Int();
        for (int i = 0; i < 2 * fields; i++)
        {
            Str();
        }

        Str();
        int capacityAt = p;
        Assert.Equal(32, Int());
        p += 4 + (Int() * 30);
        int tokensAt = p;
        Assert.Equal(6, Int());
        BitConverter.GetBytes(int.MaxValue).CopyTo(file, capacityAt);
        BitConverter.GetBytes(100_000_000).CopyTo(file, tokensAt);

        using var target = new InferenceSession(t, KvCacheFactory.Create("k4v2", t.CacheLayout(32)));
        foreach (bool seekable in new[] { true, false })
        {
            Stream s = seekable ? new MemoryStream(file) : new ForwardOnlyStream(file);
            long before = GC.GetAllocatedBytesForCurrentThread();
            var e = Assert.Throws<InvalidDataException>(() => SessionStateFile.Load(s, target, "x.kvstate"));
            Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20, $"{GC.GetAllocatedBytesForCurrentThread() - before:N0} bytes allocated");
            Assert.StartsWith($"x.kvstate: truncated state file: the tokens section needs {(seekable ? "400,000,000" : "262,144")} bytes at offset {tokensAt + 4:N0}", e.Message);
        }
    }

    [Fact]
    public void Truncation_is_exact_wherever_the_prefix_is_held_as_appending_it_alone_holds_it()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        using var t = new Transformer(m, 1);
        var prompt = Prompt(m, 60);

        // fp16, and per-token groups without a window (each position quantized alone): any prefix. Per-channel K in chunks
        // of 16, no residual: 48 positions quantized at 60, so 48..60 are exact, and the chunk ends 0, 16, 32. Per-token
        // K/V with a residual window of 16: 44 quantized at 60, only 60 itself and 0; within the window alone (12 of 16
        // positions) every prefix.
        // The int8 paths keep k4v2's rule (their key tiles are written row by row).
        foreach (var (kv, held, exact, attention) in new[]
        {
            ("fp16", 60, Enumerable.Range(0, 61).ToArray(), AttentionPrecision.Fp32),
            ("k4v2", 60, Enumerable.Range(0, 61).ToArray(), AttentionPrecision.Fp32),
            ("k4v2", 60, Enumerable.Range(0, 61).ToArray(), AttentionPrecision.Int8Values),
            ("k4v4:pc:g16", 60, [0, 16, 32, .. Enumerable.Range(48, 13)], AttentionPrecision.Fp32),
            ("k4v2:r16", 60, [0, 60], AttentionPrecision.Fp32),
            ("k4v2:r16", 12, Enumerable.Range(0, 13).ToArray(), AttentionPrecision.Fp32),
        })
        {
            IKvCache NewCache() => KvCacheFactory.Create(KvPlan.Parse(kv, t.Config.Layers), t.CacheLayout(128), attention);
            using var s = new InferenceSession(t, NewCache());
            s.Prefill(prompt.AsSpan(0, held));
            for (int n = 0; n <= held; n++)
            {
                Assert.True(exact.Contains(n) == KvCacheState.CanTruncate(s.Cache, n), $"{kv} held {held}, truncate to {n}");
            }

            Assert.False(KvCacheState.CanTruncate(s.Cache, held + 1));
            if (Enumerable.Range(0, held + 1).FirstOrDefault(n => !exact.Contains(n), -1) is int refused and >= 0)
            {
                var e = Assert.Throws<KvCacheException>(() => KvCacheState.Truncate(s.Cache, refused));
                Assert.Contains($"cannot be cut back to {refused} of its {held} positions exactly: layer 0", e.Message);
                Assert.Equal(held, s.Cache.Length);
            }

            // Cut (to a middle exact prefix, then to 16 or the next exact one below it), then run the rest: bit for bit
            // what a cache that only ever saw the prefix does.
            int cutTo = exact[exact.Length / 2];
            KvCacheState.Truncate(s.Cache, cutTo);
            if (exact.Where(n => n < cutTo && n > 0).Select(n => (int?)n).LastOrDefault() is int lower)
            {
                Assert.True(KvCacheState.CanTruncate(s.Cache, lower), $"{kv}: cut to {cutTo}, then to {lower}");
                KvCacheState.Truncate(s.Cache, lower);
                cutTo = lower;
            }

            using var fresh = new InferenceSession(t, NewCache());
            if (cutTo > 0)
            {
                fresh.Prefill(prompt.AsSpan(0, cutTo));
            }

            Assert.Equal(fresh.Cache.ByteCount, s.Cache.ByteCount);
            var la = s.Prefill(prompt.AsSpan(cutTo, 60 - cutTo)).ToArray();
            var lb = fresh.Prefill(prompt.AsSpan(cutTo, 60 - cutTo)).ToArray();
            AssertBitEqual(lb, la, $"{kv} cut to {cutTo}");
            for (int step = 0, tok = new Sampler().Sample(la); step < 6; step++)
            {
                la = s.Decode(tok).ToArray();
                lb = fresh.Decode(tok).ToArray();
                AssertBitEqual(lb, la, $"{kv} cut to {cutTo}, step {step}");
                tok = new Sampler().Sample(la);
            }
        }
    }

    [Fact]
    public void A_cache_that_is_not_one_the_factory_builds_cannot_be_saved()
    {
        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        using var s = new InferenceSession(t, new PerturbedKvCache(KvCacheFactory.Create("fp32", t.CacheLayout(32)), 0.01, 1));
        s.Prefill([1, 2]);
        var e = Assert.Throws<KvCacheException>(() => SessionStateFile.Save(new MemoryStream(), s, [1, 2]));
        Assert.Contains("cannot be saved or restored: layer 0", e.Message);
        Assert.Throws<ArgumentException>(() => SessionStateFile.Save(new MemoryStream(), s, [1]));
    }

    internal static int[] Prompt(LlamaModel m, int length)
    {
        var tokens = m.Tokenizer!.Encode(Story + " " + Story, addBos: true);
        Assert.True(tokens.Count >= length, $"the story has {tokens.Count} tokens");
        return tokens.Take(length).ToArray();
    }

    // Header per the format table: magic, version, fingerprint (count, then name/value strings with "model" first), plan
    // (description, capacity, layer count, 2 x 15 bytes per layer), tokens, logits, application data; then the caches'
    // bytes and the checksum.
    internal static long ExpectedFileBytes(LlamaModel m, IKvCache cache, int tokens, string appData)
    {
        static long Str(string s) => 4 + Encoding.UTF8.GetByteCount(s);
        var fp = ModelFingerprint.Of(m, m.Tokenizer);
        long fingerprint = 4 + Str("model") + Str(Path.GetFileName(m.Path)) + fp.Fields.Sum(f => Str(f.Key) + Str(f.Value));
        long plan = Str(cache.Description) + 4 + 4 + (cache.Layers.Count * 2 * KvCacheState.SpecBytes);
        long tokenBytes = 4 + (4L * tokens);
        long logits = 4 + (tokens == 0 ? 0 : 4L * m.Config.VocabSize);
        return 8 + 4 + fingerprint + plan + tokenBytes + logits + Str(appData) + cache.ByteCount + SessionStateFile.ChecksumBytes;
    }

    internal static void AssertBitEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
            {
                Assert.Fail($"{what}: logit {i} is {actual[i]:R}, expected {expected[i]:R} (bit for bit)");
            }
        }
    }

    internal static string SourceFile([CallerFilePath] string path = "") => path;

    internal static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(Path.GetDirectoryName(SourceFile())!); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "README.md")) && Directory.Exists(Path.Combine(d.FullName, "src", "KvAdaQuant")))
            {
                return d.FullName;
            }
        }

        throw new DirectoryNotFoundException("the repository above " + SourceFile());
    }

    private static byte[] Save(InferenceSession s, int[] tokens)
    {
        using var ms = new MemoryStream();
        SessionStateFile.Save(ms, s, tokens);
        return ms.ToArray();
    }

    // Layers of different kinds: 8/4-bit per token, FP16 keys with 2-bit values and sinks, per-channel 4-bit keys with
    // FP32 values, symmetric 3-bit, 1.58-bit values with a residual window, 6/5 bits.
    private static KvPlan Plan(string kv, int layers)
    {
        if (kv != "mixed")
        {
            return KvPlan.Parse(kv, layers);
        }

        var specs = new[]
        {
            new KvLayerSpec(new KvSpec(KvBits.Eight), new KvSpec(KvBits.Four, 16)),
            new KvLayerSpec(KvSpec.Fp16, new KvSpec(KvBits.Two, Sinks: 3)),
            new KvLayerSpec(new KvSpec(KvBits.Four, 16, QuantAxis.PerChannel, Residual: 5), KvSpec.Fp32),
            new KvLayerSpec(new KvSpec(KvBits.Three, Symmetric: true), new KvSpec(KvBits.Two, 8)),
            new KvLayerSpec(new KvSpec(KvBits.Four), new KvSpec(KvBits.Ternary, Residual: 7)),
            new KvLayerSpec(new KvSpec(KvBits.Six, Sinks: 2, Residual: 3), new KvSpec(KvBits.Five)),
        };
        Assert.Equal(layers, specs.Length);
        return new KvPlan(specs, "mixed", "test");
    }

    // A tokenizer whose token id reads differently (another vocabulary of the same size).
    private sealed class OneTokenRenamed(KvAdaQuant.Tokenization.ITokenizer inner, int id) : KvAdaQuant.Tokenization.ITokenizer
    {
        public int VocabSize => inner.VocabSize;

        public int BosToken => inner.BosToken;

        public int EosToken => inner.EosToken;

        public List<int> Encode(string text, bool addBos) => inner.Encode(text, addBos);

        public byte[] DecodeBytes(int previous, int token) => token == id ? "renamed"u8.ToArray() : inner.DecodeBytes(previous, token);
    }

    // A stream that only reads forward (a pipe), so the loader cannot check the file whole first.
    private sealed class ForwardOnlyStream(byte[] bytes) : Stream
    {
        private readonly MemoryStream _inner = new(bytes);

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, Math.Min(count, 7));

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

/// <summary>
/// The README's state example, run verbatim: it writes a relative path, so it changes the process's current directory
/// for a moment, and runs alone (a kvaq process another test starts meanwhile would inherit a folder about to vanish).
/// </summary>
[Collection(NonParallelCollection.Name)]
public class KvCacheStateReadmeTests
{
    [Fact]
    public void The_readme_state_example_runs_as_shown_and_continues_as_the_first_session_would()
    {
        using var model = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(model, threads: 1);
        var tokenizer = model.Tokenizer!;
        string dir = Directory.CreateTempSubdirectory("kvaq-readme-state-").FullName;
        string cwd = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = dir;

            // README-state:begin
            using var first = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(256)));
            var prompt = tokenizer.Encode("Once upon a time", addBos: true);
            first.Prefill(prompt.ToArray());
            SessionStateFile.SaveFile("story.kvstate", first, prompt); // atomic; ByteCount of the cache + header, tokens, logits

            using var later = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(256)));
            SessionState state = SessionStateFile.LoadFile("story.kvstate", later); // refuses another model, plan or a damaged file
            var more = new Generator(later, tokenizer).Generate(state.Tokens, cachedTokens: state.Tokens.Count, maxTokens: 32, new Sampler());
            // README-state:end

            Assert.Equal(KvCacheStateTests.ExpectedFileBytes(model, first.Cache, prompt.Count, string.Empty), new FileInfo("story.kvstate").Length);
            var uninterrupted = new Generator(first, tokenizer).Generate(prompt, cachedTokens: prompt.Count, maxTokens: 32, new Sampler());
            Assert.Equal(32, more.Tokens.Count);
            Assert.Equal(uninterrupted.Tokens, more.Tokens);
        }
        finally
        {
            Environment.CurrentDirectory = cwd;
            Directory.Delete(dir, recursive: true);
        }

        // The README's second C# block of "Using the library" is these lines.
        var readme = File.ReadAllLines(Path.Combine(KvCacheStateTests.RepositoryRoot(), "README.md"));
        int intro = Array.FindIndex(readme, l => l.StartsWith("A session's state (its KV cache as stored", StringComparison.Ordinal));
        Assert.True(intro >= 0, "README.md lost the state example");
        int open = Array.FindIndex(readme, intro, l => l.Trim() == "```csharp");
        int close = Array.FindIndex(readme, open + 1, l => l.Trim() == "```");
        var source = File.ReadAllLines(KvCacheStateTests.SourceFile());
        int begin = Array.FindIndex(source, l => l.Trim() == "// README-state:begin");
        int end = Array.FindIndex(source, l => l.Trim() == "// README-state:end");
        Assert.Equal(
            string.Join('\n', source[(begin + 1)..end].Select(l => l.Trim()).Where(l => l.Length > 0)),
            string.Join('\n', readme[(open + 1)..close].Select(l => l.Trim()).Where(l => l.Length > 0)));
    }
}
