using KvAdaQuant.Gpu;

namespace KvAdaQuant.Tests.Gpu;

public class BalancedSplitPlanTests
{
    [Theory]
    [InlineData(64, 32704, 64, 528)] // 8 x 32,768 with 8 KV heads on 132 SMs x 4 blocks
    [InlineData(8, 32704, 64, 528)] // 1 x 32,768
    [InlineData(8, 131008, 64, 528)] // 1 x 131,072
    [InlineData(128, 8128, 64, 528)] // 16 x 8,192
    [InlineData(3, 64, 37, 10)]
    [InlineData(5, 4096, 0, 7)]
    [InlineData(2, 0, 64, 528)] // residual window only
    [InlineData(1, 8192, 64, 1)]
    public void EveryTokenAndWindowIsTakenOnceIntoItsOwnSlot(int heads, int quantized, int residual, int resident)
    {
        BalancedSplitPlan plan = BalancedSplitPlan.Create(heads, quantized, residual, resident);
        Assert.InRange(plan.Blocks, 1, resident);
        var covered = new int[heads, quantized / 32];
        var windows = new int[heads];
        var slots = new HashSet<(int, int)>();
        for (int block = 0; block < plan.Blocks; block++)
        {
            foreach (var (head, slot, t0, t1, isResidual) in plan.Pieces(block))
            {
                Assert.True(slots.Add((head, slot)), $"block {block}: slot {slot} of head {head} written twice");
                if (isResidual)
                {
                    Assert.Equal(plan.TotalSlots - 1, slot);
                    windows[head]++;
                }
                else
                {
                    Assert.InRange(slot, 0, plan.PackedSlots - 1);
                    Assert.True(t0 < t1 && t0 % 32 == 0 && t1 % 32 == 0 && t1 <= quantized, $"block {block}: [{t0}, {t1})");
                    for (int step = t0 / 32; step < t1 / 32; step++)
                    {
                        covered[head, step]++;
                    }
                }
            }
        }

        foreach (int count in covered)
        {
            Assert.Equal(1, count);
        }

        Assert.All(windows, w => Assert.Equal(residual > 0 ? 1 : 0, w));
        Assert.Equal(plan.PackedSlots + (residual > 0 ? 1 : 0), plan.TotalSlots);
    }

    [Fact]
    public void BlocksGetAtLeastTheMinimumShareAndNeverMoreThanTheResidentCount()
    {
        // 8 heads x 1,022 steps + 2 for each window = 8,192 steps: 256 blocks of 32, not 528 of 15.5.
        Assert.Equal(256, BalancedSplitPlan.Create(8, 32704, 64, 528).Blocks);
        Assert.Equal(528, BalancedSplitPlan.Create(64, 32704, 64, 528).Blocks);
        Assert.Equal(1, BalancedSplitPlan.Create(1, 64, 0, 528).Blocks);
    }

    [Fact]
    public void TokensThatAreNotWholeStepsAreRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => BalancedSplitPlan.Create(2, 100, 64, 528));
        Assert.Contains("quantizedTokens", e.Message, StringComparison.Ordinal);
        Assert.Contains("multiple of 32", e.Message, StringComparison.Ordinal);
    }
}
