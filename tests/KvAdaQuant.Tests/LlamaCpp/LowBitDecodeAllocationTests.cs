using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// Issue 6's "no allocation on the decode path" for the weight types whose products read a row-group copy or a low-bit
/// kernel, on llama.cpp's own files of tiny-llama-256: after warm-up (the copies are made at the first product), decode
/// steps allocate nothing, with an FP16 cache and with a k4v2 cache. (DecodeAllocationTests covers Q8_0.)
/// </summary>
[Collection(NonParallelCollection.Name)]
public class LowBitDecodeAllocationTests(ConvertedModels converted, ITestOutputHelper output) : IClassFixture<ConvertedModels>
{
    [LlamaCppTheory]
    [InlineData(LlamaCppQuantizationType.Q2_K)]
    [InlineData(LlamaCppQuantizationType.Q3_K_M)]
    [InlineData(LlamaCppQuantizationType.IQ4_XS)]
    [InlineData(LlamaCppQuantizationType.IQ4_NL)]
    [InlineData(LlamaCppQuantizationType.Q4_1)]
    [InlineData(LlamaCppQuantizationType.Q5_1)]
    [InlineData(LlamaCppQuantizationType.Q5_0)]
    [InlineData(LlamaCppQuantizationType.Q4_K_M)]
    public void DecodeStepsAllocateNothingAfterWarmUp(LlamaCppQuantizationType type) =>
        AssertDecodeAllocatesNothing(converted.GetLlamaCppQuantized(converted.GetSynthetic("tiny-llama-256", GgmlType.F16), type), type.ToString());

    // F16 and BF16 files (our writer; the F16 tiles, and the scan for Inf/NaN halves made once, at the first product).
    [Theory]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void HalfPrecisionDecodeStepsAllocateNothingAfterWarmUp(GgmlType type) =>
        AssertDecodeAllocatesNothing(converted.GetSynthetic("tiny-llama-256", type), type.ToString());

    private void AssertDecodeAllocatesNothing(string gguf, string type)
    {
        using var model = ModelLoader.Load(gguf);
        using var transformer = new Transformer(model, 2);
        foreach (bool quantized in new[] { false, true })
        {
            IKvCache cache = quantized
                ? KvCacheFactory.Create("k4v2", transformer.CacheLayout(512))
                : new FullPrecisionKvCache(transformer.CacheLayout(512), half: true);
            using var session = new InferenceSession(transformer, cache);
            session.Prefill([1, 403, 407, 261, 17, 99]);
            int token = 378;
            for (int i = 0; i < 40; i++)
            {
                token = Sampler.ArgMax(session.Decode(token));
            }

            // The counter is process-wide (see DecodeAllocationTests): up to three windows.
            var windows = new List<long>();
            long allocated = long.MaxValue;
            for (int attempt = 0; attempt < 3 && allocated >= 1024; attempt++)
            {
                long before = GC.GetTotalAllocatedBytes(precise: true);
                for (int i = 0; i < 40; i++)
                {
                    token = Sampler.ArgMax(session.Decode(token));
                }

                allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
                windows.Add(allocated);
            }

            output.WriteLine($"{type} {(quantized ? "k4v2" : "fp16")}: {string.Join(", ", windows)} bytes per 40 steps");
            Assert.True(allocated < 1024, $"{type} {(quantized ? "k4v2" : "fp16")}: 40 decode steps allocated {string.Join(", then ", windows)} bytes in {windows.Count} windows");
        }
    }
}
