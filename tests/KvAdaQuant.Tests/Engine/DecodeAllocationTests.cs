using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

[Collection(NonParallelCollection.Name)]
public class DecodeAllocationTests
{
    [Fact]
    public void DecodeStepsAllocateNothingAfterWarmUp()
    {
        using var model = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(512), half: true));
        session.Prefill([1, 403, 407, 261]);
        int token = 378;
        for (int i = 0; i < 120; i++)
        {
            token = Sampler.ArgMax(session.Decode(token));
        }

        // The counter is process-wide: the test runner's own threads (still reporting earlier tests) can allocate
        // during a window. An allocation on the decode path shows up in every window; up to three are measured.
        var windows = new List<long>();
        long allocated = long.MaxValue;
        for (int attempt = 0; attempt < 3 && allocated >= 1024; attempt++)
        {
            long before = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < 50; i++)
            {
                token = Sampler.ArgMax(session.Decode(token));
            }

            allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
            windows.Add(allocated);
        }

        Assert.True(allocated < 1024, $"50 decode steps allocated {string.Join(", then ", windows)} bytes in {windows.Count} windows");
    }

    [Fact]
    public void LongDecodeDoesNotReallocateScratchPerPosition()
    {
        // The attended length grows by one per position; scratch sized exactly to it would allocate a new array at
        // every step (rep x length floats: megabytes over these 2,000 steps). Geometric growth allocates a few times.
        using var model = ModelLoader.Load("stories3M-q80");
        var windows = new List<long>();
        long allocated = long.MaxValue;
        for (int attempt = 0; attempt < 3 && allocated >= 256 * 1024; attempt++)
        {
            // A fresh engine per attempt: its scratch must start small for the growth to be measured.
            using var transformer = new Transformer(model, 2);
            using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(2304), half: true));
            session.Prefill([1, 403, 407, 261]);
            int token = 378;
            for (int i = 0; i < 100; i++)
            {
                token = Sampler.ArgMax(session.Decode(token));
            }

            long before = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < 2000; i++)
            {
                token = Sampler.ArgMax(session.Decode(token));
            }

            allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
            windows.Add(allocated);
        }

        Assert.True(allocated < 256 * 1024, $"2,000 decode steps from position 104 allocated {string.Join(", then ", windows)} bytes");
    }
}
