namespace KvAdaQuant.Gpu;

/// <summary>
/// How the fast kernel's balanced mode cuts the work (the same arithmetic as <c>kvq_k4v2_fast</c> with bhCount &gt; 0):
/// every (batch, KV head) costs T / 32 steps of 32 packed tokens plus <see cref="ResidualWeight"/> steps for its FP16
/// residual window; the concatenation of all of them is cut into <see cref="Blocks"/> equal ranges, one per block.
/// A block's range can end in one head and continue in the next; each piece is its own partial (split slot).
/// </summary>
public sealed class BalancedSplitPlan
{
    /// <summary>Steps the residual window counts for (FAST_RES_WEIGHT in the kernel).</summary>
    public const int ResidualWeight = 2;

    /// <summary>Fewest steps a block is given (below this, a block's start and merge outweigh its work).</summary>
    public const int MinStepsPerBlock = 32;

    private BalancedSplitPlan(int heads, int quantizedTokens, int residualTokens, int blocks)
    {
        Heads = heads;
        QuantizedTokens = quantizedTokens;
        ResidualTokens = residualTokens;
        Blocks = blocks;
        long steps = quantizedTokens / 32;
        long minLength = TotalSteps / blocks;
        PackedSlots = steps == 0 ? 0 : (int)(((steps + minLength - 1) / minLength) + 1);
        TotalSlots = PackedSlots + (residualTokens > 0 ? 1 : 0);
    }

    /// <summary>(batch, KV head) pairs.</summary>
    public int Heads { get; }

    /// <summary>Packed tokens per head (a multiple of 32).</summary>
    public int QuantizedTokens { get; }

    /// <summary>Residual-window tokens per head.</summary>
    public int ResidualTokens { get; }

    /// <summary>Blocks in the grid.</summary>
    public int Blocks { get; }

    /// <summary>Split slots per head for packed partials (an upper bound: some stay unused).</summary>
    public int PackedSlots { get; }

    /// <summary>Split slots per head including the residual window's (the last).</summary>
    public int TotalSlots { get; }

    private long StepsPerHead => (QuantizedTokens / 32) + (ResidualTokens > 0 ? ResidualWeight : 0);

    private long TotalSteps => Heads * StepsPerHead;

    /// <summary>
    /// Plans <paramref name="heads"/> heads of <paramref name="quantizedTokens"/> packed tokens (a multiple of 32) and
    /// <paramref name="residualTokens"/> window tokens for at most <paramref name="residentBlocks"/> blocks (the blocks
    /// the device holds at once), giving each block at least <see cref="MinStepsPerBlock"/> steps where there are enough.
    /// </summary>
    public static BalancedSplitPlan Create(int heads, int quantizedTokens, int residualTokens, int residentBlocks)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        ArgumentOutOfRangeException.ThrowIfNegative(quantizedTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(residualTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(residentBlocks);
        if (quantizedTokens % 32 != 0)
        {
            throw new ArgumentException($"quantizedTokens: {quantizedTokens} is not a multiple of 32.", nameof(quantizedTokens));
        }

        if (quantizedTokens + residualTokens == 0)
        {
            throw new ArgumentException("quantizedTokens: no positions to attend to.", nameof(quantizedTokens));
        }

        long total = (long)heads * ((quantizedTokens / 32) + (residualTokens > 0 ? ResidualWeight : 0));
        int blocks = (int)Math.Clamp(total / MinStepsPerBlock, 1, residentBlocks);
        return new BalancedSplitPlan(heads, quantizedTokens, residualTokens, blocks);
    }

    /// <summary>
    /// The pieces block <paramref name="block"/> computes, in order: head, split slot, packed token range
    /// [T0, T1) (empty for the residual window) and whether it is the residual window.
    /// </summary>
    public IEnumerable<(int Head, int Slot, int T0, int T1, bool Residual)> Pieces(int block)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(block);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(block, Blocks);
        long sph = QuantizedTokens / 32, c = StepsPerHead, n = TotalSteps, nb = Blocks;
        long x = block * n / nb;
        long end = (block + 1) * n / nb;
        while (x < end)
        {
            int head = (int)(x / c);
            long start = head * c;
            long off = x - start;
            long segEnd = Math.Min(end, start + c) - start;
            if (off < sph)
            {
                int first = (int)((((start + 1) * nb) - 1) / n);
                yield return (head, block - first, (int)(32 * off), (int)(32 * Math.Min(segEnd, sph)), false);
            }

            if (ResidualTokens > 0 && off <= sph && sph < segEnd)
            {
                yield return (head, TotalSlots - 1, 0, 0, true);
            }

            x = start + segEnd;
        }
    }
}
