using KvAdaQuant.Allocation;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Allocation;

public class SpecBitCostTests
{
    [Fact]
    public void K4V2_group32_asymmetric_on_stories3M_costs_4_real_bits()
    {
        // Per head per token: K 16 + 4 bytes, V 8 + 4 bytes over 32 elements each (issue 3's figure: 384 bytes per token for 6 layers x 2 heads).
        var cost = new SpecBitCost(new KvSpec(KvBits.Four), new KvSpec(KvBits.Four), headDim: 32, tokens: 512);
        Assert.Equal(5.0, cost.BitsPerElement(KvTensorKind.Key, 0, 4));
        Assert.Equal(3.0, cost.BitsPerElement(KvTensorKind.Value, 0, 2));
        var a = BitAllocation.Uniform(6, 4, 2);
        Assert.Equal(4.0, a.AverageBits(cost));
        Assert.Equal(384, a.AverageBits(cost) / 8 * 6 * 2 * 2 * 32);
    }

    [Fact]
    public void Ternary_scales_residual_and_sinks_are_counted()
    {
        // Ternary packs 5 per byte: 32 values -> 7 bytes, plus 4 bytes of FP16 scale and zero = 88 bits per 32 elements.
        var plain = new SpecBitCost(new KvSpec(KvBits.Four), new KvSpec(KvBits.Four), 32, 100);
        Assert.Equal(88.0 / 32, plain.BitsPerElement(KvTensorKind.Key, 0, 1.58), 12);

        // Symmetric: scale only (2 bytes per group of 32).
        var sym = new SpecBitCost(new KvSpec(KvBits.Four, Symmetric: true), new KvSpec(KvBits.Four, Symmetric: true), 32, 100);
        Assert.Equal(4.5, sym.BitsPerElement(KvTensorKind.Value, 0, 4), 12);

        // Residual 20 + sinks 4 in FP16 over 100 tokens: 24 tokens at 16 bits, 76 at 5 bits.
        var windowed = new SpecBitCost(new KvSpec(KvBits.Four, Residual: 20, Sinks: 4), new KvSpec(KvBits.Four), 32, 100);
        Assert.Equal(((24 * 16.0) + (76 * 5.0)) / 100, windowed.BitsPerElement(KvTensorKind.Key, 0, 4), 12);

        // Group size override (group-aware): groups of 16 double the parameter share.
        Assert.Equal(6.0, plain.BitsPerElement(KvTensorKind.Key, 0, 4, groupSize: 16), 12);
    }

    [Fact]
    public void Key_favoring_under_real_accounting_picks_K4V2_at_the_cost_of_K3V3()
    {
        var cost = new SpecBitCost(new KvSpec(KvBits.Four), new KvSpec(KvBits.Four), 32, 512);
        double budget = BitAllocation.Uniform(6, 3, 3).AverageBits(cost);
        Assert.Equal(4.0, budget);
        var plan = KeyFavoringAllocator.Allocate(6, budget, BitRange.Parse("1,1.58,2,3,4,6,8"), cost);
        Assert.All(plan.KeyBits, b => Assert.Equal(4, b));
        Assert.All(plan.ValueBits, b => Assert.Equal(2, b));
    }
}
