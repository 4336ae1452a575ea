using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// <see cref="CudaDecoder.Prefill"/> in chunks against the same decoder run position by position (prefill chunk 1) and
/// against the CPU engine: FP16 and packed caches (the generic and the K4V2 kernels, rotated rows, a mixed plan), prompts
/// that cross the packed window's flushes (a chunk of 256 positions attended in window segments, flushed between them), a
/// prefill after decode steps (a chat's next turn, whose first segment the part-full window cuts), and a batch. GPU only: skipped with the reason elsewhere.
/// </summary>
public class CudaPrefillTests(ITestOutputHelper output)
{
    // Logits of an FP16 cache after another summation order: see ChunkedPrefillEqualsPositionByPosition.
    private const double Fp16CacheBound = 2e-3;

    [SkippableTheory]
    [InlineData("stories260K", "fp16")]
    [InlineData("stories260K", "k4v2")]
    [InlineData("stories260K", "k8v4")]
    [InlineData("stories260K", "k3v2:g4")]
    [InlineData("stories3M-q80", "fp16")]
    [InlineData("stories3M-q80", "k4v2")]
    [InlineData("tiny-hd64", "k4v2")]
    [InlineData("tiny-hd64", "k4v2:rot")]
    [InlineData("tiny-hd128", "k4v2")]
    [InlineData("tiny-hd64", "fp16")]
    [InlineData("tiny-hd96", "fp16")] // two threads a query row, 48 dimensions each
    [InlineData("tiny-hd96", "k4v2")]
    public void ChunkedPrefillEqualsPositionByPosition(string modelName, string kv)
    {
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        using var dir = new TempDir();
        using LlamaModel model = Load(modelName, dir);
        var plan = KvPlan.Parse(kv, model.Config.Layers);
        int[] first = Prompt(model.Config, 150, 1), second = Prompt(model.Config, 100, 2);
        int[] between = Prompt(model.Config, 5, 3);
        int capacity = first.Length + between.Length + second.Length + 32;
        using var chunked = new CudaDecoder(context, model, plan, 1, capacity);
        using var single = new CudaDecoder(context, model, plan, 1, capacity, prefillChunk: 1);
        Assert.Equal(CudaDecoder.DefaultPrefillChunk, chunked.PrefillChunk);
        Assert.Equal(1, single.PrefillChunk);

        // The chunk's matrix products sum each row's terms in another order than the decode step's matrix-vector kernels
        // (FP32 rounding, about 1e-7 of the sum of |w x|), and the chunk's attention runs other kernels than the decode step's
        // (tensor cores or FP32 FMAs over a tile of positions; the decode step's K4V2 tensor-core kernel takes FP16 inputs). Such a difference can move a cached value across a rounding boundary: of its FP16 value
        // (one FP16 step, 2^-11 of it; measured up to 6.8e-4 of the largest logit on stories260K), or of a packed layer's 2- to
        // 8-bit code (a whole quantization step), so FP16 caches are held to 2e-3 and packed ones to the decode checks' 1e-2.
        bool packed = chunked.Layout.AnyPacked;
        double bound = packed ? 1e-2 : Fp16CacheBound;
        var a = new float[model.Config.VocabSize];
        var b = new float[model.Config.VocabSize];
        void Compare(string stage)
        {
            chunked.CopyLogits(a);
            single.CopyLogits(b);
            double rel = RelativeDifference(a, b);
            output.WriteLine($"{modelName} {kv} {stage}: position {chunked.Position}, window {chunked.PackedState}, max |chunked - single| / max |single| = {rel:E2}");
            Assert.Equal(single.Position, chunked.Position);
            Assert.Equal(single.PackedState, chunked.PackedState);
            Assert.True(rel <= bound, $"{stage}: {rel:E2} > {bound:E0}");
        }

        chunked.Prefill(first);
        single.Prefill(first);
        Compare("first prefill");
        foreach (int t in between)
        {
            chunked.Step([t]);
            single.Step([t]);
        }

        Compare("decode steps");
        chunked.Prefill(second);
        single.Prefill(second);
        Compare("second prefill");

        // Greedy decoding goes on from the chunked cache as from the other.
        var ta = new int[1];
        var tb = new int[1];
        int same = 0;
        for (int i = 0; i < 24; i++)
        {
            chunked.SampleGreedy(ta);
            single.SampleGreedy(tb);
            if (ta[0] != tb[0])
            {
                break;
            }

            same++;
            chunked.StepSampled();
            single.StepSampled();
        }

        output.WriteLine($"greedy tokens equal: {same} of 24");
        Assert.True(packed || same == 24, $"only {same} greedy tokens equal");
        Assert.True(same >= 8, $"only {same} greedy tokens equal");
    }

    [SkippableTheory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public void ChunkedPrefillMatchesTheCpuEngineAndGreedyTokensAreEqual(string modelName)
    {
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        using var model = ModelLoader.Load(modelName);
        int[] prompt = Prompt(model.Config, 200, 4);
        using var both = new GpuAndCpuFp16(context, model, 256);
        both.Decoder.Prefill(prompt);
        var gpu = new float[model.Config.VocabSize];
        both.Decoder.CopyLogits(gpu);
        float[] cpu = both.Cpu.Prefill(prompt).ToArray();
        double rel = RelativeDifference(gpu, cpu);
        output.WriteLine($"{modelName}: {prompt.Length} prompt tokens, max |GPU - CPU| / max |CPU| = {rel:E2}");
        Assert.True(rel <= 1e-2, $"{rel:E2}");

        var gpuTokens = new List<int>();
        var cpuTokens = new List<int>();
        var tok = new int[1];
        ReadOnlySpan<float> logits = cpu;
        for (int i = 0; i < 40; i++)
        {
            both.Decoder.SampleGreedy(tok);
            gpuTokens.Add(tok[0]);
            int next = Sampler.ArgMax(logits);
            cpuTokens.Add(next);
            both.Decoder.StepSampled();
            logits = both.Cpu.Decode(next);
        }

        Assert.Equal(cpuTokens, gpuTokens);
    }

    [SkippableTheory]
    [InlineData("fp16")]
    [InlineData("k4v2")]
    public void EverySequenceOfABatchGetsTheLogitsOfOne(string kv)
    {
        // Three sequences: 85 positions a chunk (256 rows at most; a packed layer attends them in window segments), the splits cut for
        // 3 x the KV heads.
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        using var model = ModelLoader.Load("stories3M-q80");
        var plan = KvPlan.Parse(kv, model.Config.Layers);
        int[] prompt = Prompt(model.Config, 130, 5);
        using var one = new CudaDecoder(context, model, plan, 1, 160);
        using var three = new CudaDecoder(context, model, plan, 3, 160);
        Assert.Equal(CudaDecoder.MaxChunkRows / 3, three.PrefillChunk);
        one.Prefill(prompt);
        three.Prefill(prompt.SelectMany(t => new[] { t, t, t }).ToArray());
        int vocab = model.Config.VocabSize;
        var want = new float[vocab];
        var got = new float[3 * vocab];
        one.CopyLogits(want);
        three.CopyLogits(got);
        // The three sequences of the batch take the same path: the same bits. Against one sequence alone the chunks are cut
        // elsewhere (85 positions against 130) and the column splits follow the row count, so the sums differ in order:
        // the bounds of ChunkedPrefillEqualsPositionByPosition.
        double bound = one.Layout.AnyPacked ? 1e-2 : Fp16CacheBound;
        for (int s = 0; s < 3; s++)
        {
            double rel = RelativeDifference(got.AsSpan(s * vocab, vocab), want);
            output.WriteLine($"{kv} sequence {s}: {rel:E2}");
            Assert.True(rel <= bound, $"sequence {s}: {rel:E2}");
            Assert.True(got.AsSpan(s * vocab, vocab).SequenceEqual(got.AsSpan(0, vocab)), $"sequence {s} differs from sequence 0");
        }
    }

    [SkippableTheory]
    [InlineData("stories260K", "fp16", "gemm")] // F16 weights
    [InlineData("stories3M-q80", "fp16", "gemm")] // Q8_0
    [InlineData("tiny-hd64-q4", "fp16", "gemm")] // Q4_0
    [InlineData("stories3M-q80", "k4v2", "gemm")]
    [InlineData("tiny-hd64", "fp16", "attention")] // two m-tiles a warp
    [InlineData("tiny-hd96", "fp16", "attention")]
    [InlineData("tiny-hd128", "fp16", "attention")]
    [InlineData("tiny-hd64", "k4v2", "attention")] // the K4V2 chunk kernel: dequantized K / V as FP16 hi + lo
    [InlineData("tiny-hd128", "k3v2:g32", "attention")] // the generic packed one
    [InlineData("tiny-hd64", "k4v2:rot", "attention")]
    public void TensorCoreKernelsGiveTheFmaKernelsLogits(string modelName, string kv, string kernels)
    {
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        Skip.IfNot(CudaDecoder.TensorCoresAvailable(context.ComputeCapability), $"{context.Arch} has no mma.sync m16n8k16");
        using var dir = new TempDir();
        using LlamaModel model = Load(modelName, dir);
        var plan = KvPlan.Parse(kv, model.Config.Layers);
        int[] prompt = Prompt(model.Config, 150, 6);

        // Only the named kernels differ: the matrix products (gemm) or the chunk attention (attention).
        bool gemm = kernels == "gemm";
        using var tc = new CudaDecoder(context, model, plan, 1, 200, tensorCoreAttention: gemm ? false : null);
        using var fma = new CudaDecoder(context, model, plan, 1, 200, tensorCoreGemm: gemm ? false : null, tensorCoreAttention: false);
        Assert.True(gemm ? tc.PrefillTensorCores : tc.PrefillAttentionTensorCores);
        Assert.False(gemm ? fma.PrefillTensorCores : fma.PrefillAttentionTensorCores);
        Assert.Equal(tc.PrefillTensorCores, gemm ? !fma.PrefillTensorCores : fma.PrefillTensorCores);
        tc.Prefill(prompt);
        fma.Prefill(prompt);
        var a = new float[model.Config.VocabSize];
        var b = new float[model.Config.VocabSize];
        tc.CopyLogits(a);
        fma.CopyLogits(b);
        double rel = RelativeDifference(a, b);
        output.WriteLine($"{modelName} {kv} {kernels}: max |tensor cores - FMA| / max |FMA| = {rel:E2}");

        // Both sum FP32-exact products in FP32 (the tensor-core kernels' FP32 operands as two FP16 halves carry about 22
        // bits; their sums are checked against double precision in CudaChunkGemmTests and CudaChunkAttentionTests), in
        // another order. The bounds are those of ChunkedPrefillEqualsPositionByPosition: a rounding difference can move a
        // cached FP16 value or a K/V code by a step.
        Assert.True(rel <= (tc.Layout.AnyPacked ? 1e-2 : Fp16CacheBound), $"{rel:E2}");
        var ta = new int[1];
        var tb = new int[1];
        int same = 0;
        for (int i = 0; i < 24 && same == i; i++)
        {
            tc.SampleGreedy(ta);
            fma.SampleGreedy(tb);
            same += ta[0] == tb[0] ? 1 : 0;
            tc.StepSampled();
            fma.StepSampled();
        }

        output.WriteLine($"greedy tokens equal: {same} of 24");
        Assert.True(tc.Layout.AnyPacked ? same >= 8 : same == 24, $"only {same} greedy tokens equal");
    }

    [SkippableTheory]
    [InlineData("stories3M-q80", "fp16")]
    [InlineData("stories3M-q80", "k4v2")]
    [InlineData("tiny-hd64", "k4v2")]
    public void EveryPositionsLogitsFromTheChunksMatchPositionByPosition(string modelName, string kv)
    {
        // A prompt's log-probabilities (IDecodeSession.Prefill with a handler, as kvaq serve's prompt logprobs use it): chunks
        // of 64 (150 tokens: 64 + 64 + 22, the packed window flushed inside them) against the decoder run position by
        // position, every position's logits within the bounds of ChunkedPrefillEqualsPositionByPosition.
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        using var dir = new TempDir();
        using LlamaModel model = Load(modelName, dir);
        var plan = KvPlan.Parse(kv, model.Config.Layers);
        int[] prompt = Prompt(model.Config, 150, 7);
        using var chunked = new CudaDecoder(context, model, plan, 1, 200, prefillChunk: 64);
        using var single = new CudaDecoder(context, model, plan, 1, 200, prefillChunk: 1);
        var chunkSession = new CudaDecodeSession(chunked);
        IDecodeSession singleSession = new CudaDecodeSession(single);
        var got = new List<float[]>();
        var want = new List<float[]>();
        float[] last = chunkSession.Prefill(prompt, (i, logits) =>
        {
            Assert.Equal(got.Count, i);
            got.Add(logits.ToArray());
        }).ToArray();
        singleSession.Prefill(prompt, (i, logits) => want.Add(logits.ToArray()));
        Assert.Equal(prompt.Length, got.Count);
        Assert.Equal(prompt.Length, want.Count);
        Assert.Equal(prompt.Length, chunked.Position);
        Assert.True(last.AsSpan().SequenceEqual(got[^1]), "the session's logits after the prompt differ from its last position's");
        double bound = chunked.Layout.AnyPacked ? 1e-2 : Fp16CacheBound, worst = 0;
        for (int i = 0; i < prompt.Length; i++)
        {
            double rel = RelativeDifference(got[i], want[i]);
            worst = Math.Max(worst, rel);
            Assert.True(rel <= bound, $"position {i}: {rel:E2}");
        }

        output.WriteLine($"{modelName} {kv}: {prompt.Length} positions' logits, max |chunked - single| / max |single| = {worst:E2}");

        // Decoding goes on from the same state: the next token's logits within the same bound.
        int next = Sampler.ArgMax(last);
        double after = RelativeDifference(chunkSession.Decode(next), singleSession.Decode(next));
        Assert.True(after <= bound, $"after the prompt: {after:E2}");
    }

    [SkippableFact]
    public void BadPrefillInputIsOneClearErrorAndRunsNothing()
    {
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        using var model = ModelLoader.Load("stories260K");
        using var decoder = new CudaDecoder(context, model, KvPlan.Parse("fp16", model.Config.Layers), 2, 64);
        var e = Assert.Throws<ArgumentException>(() => decoder.Prefill(new[] { 1, 2, 3 }));
        Assert.Contains("3 is not a whole number of positions for a batch of 2", e.Message, StringComparison.Ordinal);
        var v = Assert.Throws<ArgumentOutOfRangeException>(() => decoder.Prefill(new[] { 1, 1, 2, model.Config.VocabSize }));
        Assert.Contains($"token {model.Config.VocabSize} is outside the vocabulary", v.Message, StringComparison.Ordinal);
        var full = Assert.Throws<KvCacheException>(() => decoder.Prefill(new int[2 * 65]));
        Assert.Contains("65 positions after 0 do not fit in the GPU cache of 64", full.Message, StringComparison.Ordinal);
        Assert.Equal(0, decoder.Position);
    }

    // The fixture models by name, or a synthetic Q8_0 Llama with head dim 64 or 128 (the K4V2 tensor-core kernel's) or 96
    // (Q4_0 where the name ends in -q4).
    private static LlamaModel Load(string name, TempDir dir)
    {
        if (!name.StartsWith("tiny-hd", StringComparison.Ordinal))
        {
            return ModelLoader.Load(name);
        }

        bool q4 = name.EndsWith("-q4", StringComparison.Ordinal);
        (int dim, int heads) = name.Replace("-q4", "", StringComparison.Ordinal) switch { "tiny-hd64" => (512, 8), "tiny-hd96" => (384, 4), _ => (512, 4) };
        var preset = new SyntheticModelPreset(
            name, SyntheticModelPreset.Llama(dim, 1024, 2, heads, 2, 512, 1024, 500000f, new RopeScaling(32f, 1f, 4f, 8192), tied: false), false);
        string file = dir.File(name + ".gguf");
        SyntheticModelWriter.Create(preset, q4 ? KvAdaQuant.Numerics.GgmlType.Q4_0 : KvAdaQuant.Numerics.GgmlType.Q8_0, 7).Write(file);
        return ModelLoader.Load(file);
    }

    // BOS, then pseudo-random tokens of the vocabulary.
    private static int[] Prompt(ModelConfig c, int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(i => i == 0 && seed == 1 ? c.BosToken : rng.Next(3, c.VocabSize)).ToArray();
    }

    private static double RelativeDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double diff = 0, scale = 0;
        for (int i = 0; i < b.Length; i++)
        {
            diff = Math.Max(diff, Math.Abs((double)a[i] - b[i]));
            scale = Math.Max(scale, Math.Abs((double)b[i]));
        }

        return diff / scale;
    }
}
