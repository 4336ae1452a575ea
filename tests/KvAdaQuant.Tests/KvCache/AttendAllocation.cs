using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>The decode-path allocation check shared by the attention tests.</summary>
internal static class AttendAllocation
{
    /// <summary>
    /// Bytes allocated on this thread by 20 <c>Attend</c> calls (4 query heads, lengths 290 down to 271, alternating
    /// the two KV heads) on a 300-position, 2-KV-head layer of <paramref name="plan"/> holding 290 random positions,
    /// after one warm-up call (<see cref="AllocationCheck.OfFirstCleanWindow"/>).
    /// </summary>
    public static long OfTwentyAttends(string plan, int headDim, AttentionPrecision attention)
    {
        var layout = new KvLayout(1, 2, headDim, 300);
        using var cache = KvCacheFactory.Create(KvPlan.Parse(plan, 1), layout, attention);
        var layer = cache.Layers[0];
        var rng = new Random(3);
        var rows = Enumerable.Range(0, 290 * layout.KvDim).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        layer.Append(rows, rows, 290);
        var q = rows.AsSpan(0, 4 * headDim).ToArray();
        var output = new float[4 * headDim];
        var scores = new float[4 * 300];
        // Warm-up: both heads, and a length whose quantized rows end in a partial quad (one-time static set-up of the
        // FP32 kernel that sums those rows for the byte-weight path).
        layer.Attend(1, q, 4, 290, output, scores);
        layer.Attend(0, q, 4, 289, output, scores);
        // 20 calls a window (AllocationCheck: a one-off by the runtime was seen once in a full parallel run).
        return AllocationCheck.OfFirstCleanWindow(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                layer.Attend(i % 2, q, 4, 290 - i, output, scores);
            }
        });
    }
}
