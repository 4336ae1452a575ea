using KvAdaQuant.Allocation;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Allocation;

public class NormAwareAllocatorTests
{
    private static readonly BitRange ReferenceRange = BitRange.Parse("1,1.58,2,4,6,8");

    private static LayerNorms ReferenceNorms(string model, NormScore score = NormScore.Frobenius) =>
        LayerNormsReader.Read(Fixtures.Path("reference", "kvq-norms", score == NormScore.Frobenius ? "frobenius_norm" : "spectral_norm", model + ".json"), score, NormSource.Weights);

    [Fact]
    public void Reproduces_reference_plan_for_Llama32_1B_instruct_frobenius_budget_4()
    {
        var norms = ReferenceNorms("Llama3.2-1B-it");
        Assert.Equal(16, norms.Layers);
        var plan = NormAwareAllocator.Allocate(norms, 4, ReferenceRange, new NominalBitCost());
        Assert.Equal(new double[] { 6, 6, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4 }, plan.KeyBits);
        Assert.Equal(new double[] { 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4 }, plan.ValueBits);
    }

    [Theory]
    [InlineData("Llama3.2-1B-it", 2)]
    [InlineData("Llama3.1-8B", 4)]
    [InlineData("Qwen3-8B", 2)]
    [InlineData("Llama3.3-70B-it", 4)]
    public void Spends_the_budget_and_never_more_on_every_reference_model(string model, double budget)
    {
        foreach (var score in new[] { NormScore.Frobenius, NormScore.Spectral })
        {
            var norms = ReferenceNorms(model, score);
            var plan = NormAwareAllocator.Allocate(norms, budget, ReferenceRange, new NominalBitCost());
            double avg = plan.AverageBits(new NominalBitCost());
            Assert.True(avg <= budget + 1e-9, $"{model} {score}: {avg}");

            // No single raise fits any more: the greedy stopped because the budget is spent.
            double slack = (budget - avg) * 2 * norms.Layers;
            foreach (var b in plan.KeyBits.Concat(plan.ValueBits))
            {
                if (ReferenceRange.Next(b) is double next)
                {
                    Assert.True(next - b > slack + 1e-6, $"{model} {score}: a raise {b}->{next} still fits in slack {slack}");
                }
            }
        }
    }

    [Fact]
    public void Keys_get_at_least_as_many_bits_where_their_norm_dominates()
    {
        var norms = new LayerNorms([10, 10, 10], [1, 1, 1], "synthetic");
        var plan = NormAwareAllocator.Allocate(norms, 3, BitRange.Parse("1,2,3,4,5,6,8"), new NominalBitCost());
        for (int l = 0; l < 3; l++)
        {
            Assert.True(plan.KeyBits[l] > plan.ValueBits[l], plan.ToString());
        }

        Assert.Equal(3.0, plan.AverageBits(new NominalBitCost()), 9);
    }

    [Fact]
    public void Equal_norms_tie_break_to_the_lowest_index()
    {
        // Budget for one raise 1 -> 2 beyond the floor: it goes to K of layer 0 (index 0).
        var norms = new LayerNorms([5, 5], [5, 5], "synthetic");
        var plan = NormAwareAllocator.Allocate(norms, 1.25, BitRange.Parse("1,2"), new NominalBitCost());
        Assert.Equal(new double[] { 2, 1 }, plan.KeyBits);
        Assert.Equal(new double[] { 1, 1 }, plan.ValueBits);
    }

    [Fact]
    public void Real_cost_counts_overhead_and_stays_within_budget()
    {
        var cost = new OverheadBitCost(0.5);
        var norms = ReferenceNorms("Llama3.2-1B-it");
        var plan = NormAwareAllocator.Allocate(norms, 4.5, ReferenceRange, cost);
        Assert.Equal(4.5, plan.AverageBits(cost), 9);

        // A constant overhead shifts the budget but leaves the plan unchanged.
        var nominal = NormAwareAllocator.Allocate(norms, 4, ReferenceRange, new NominalBitCost());
        Assert.Equal(nominal.KeyBits, plan.KeyBits);
        Assert.Equal(nominal.ValueBits, plan.ValueBits);
    }

    [Fact]
    public void A_free_raise_does_not_stall_the_greedy()
    {
        // Head dim 8, groups of 8: ternary (2 bytes + 4 bytes of scale/zero) costs as much as 2 bits, 6 bits per element.
        var cost = new SpecBitCost(new KvSpec(KvBits.Four, GroupSize: 8), new KvSpec(KvBits.Four, GroupSize: 8), 8, 256);
        Assert.Equal(cost.BitsPerElement(KvTensorKind.Key, 0, 2), cost.BitsPerElement(KvTensorKind.Key, 0, 1.58));
        var norms = new LayerNorms([10, 10], [3, 3], "synthetic");
        var plan = NormAwareAllocator.Allocate(norms, 7, BitRange.Parse("1,1.58,2,3,4,6,8"), cost);
        Assert.Equal(7.0, plan.AverageBits(cost), 9);
        Assert.All(plan.KeyBits.Concat(plan.ValueBits), b => Assert.True(b >= 2, plan.ToString()));
    }

    [Fact]
    public void Norms_whose_squares_overflow_keep_their_order()
    {
        // 1e200 squared is infinity; the gains were inf - inf = NaN, so layer 0's K never rose: K=[1,3,4].
        var huge = new LayerNorms([1e200, 1, 3], [1, 2, 3], "synthetic");
        var plan = NormAwareAllocator.Allocate(huge, 4, BitRange.Parse("1,1.58,2,3,4,6,8"), new NominalBitCost());
        Assert.Equal(8, plan.KeyBits[0]);
        Assert.Equal(plan.KeyBits.Concat(plan.ValueBits).Max(), plan.KeyBits[0]);
        Assert.True(plan.AverageBits(new NominalBitCost()) <= 4 + 1e-9);

        // Norms of sane ratios scaled up far past the square's range give the plan of the norms as they were.
        foreach (var model in new[] { "Llama3.2-1B-it", "Llama3.1-8B" })
        {
            var norms = ReferenceNorms(model);
            var scaled = new LayerNorms(norms.Keys.Select(x => x * 1e250).ToArray(), norms.Values.Select(x => x * 1e250).ToArray(), "scaled");
            var expected = NormAwareAllocator.Allocate(norms, 4, ReferenceRange, new NominalBitCost());
            var actual = NormAwareAllocator.Allocate(scaled, 4, ReferenceRange, new NominalBitCost());
            Assert.Equal(expected.KeyBits, actual.KeyBits);
            Assert.Equal(expected.ValueBits, actual.ValueBits);
        }
    }

    [Fact]
    public void Budget_below_the_floor_is_rejected()
    {
        var norms = new LayerNorms([1], [1], "synthetic");
        var e = Assert.Throws<ArgumentException>(() => NormAwareAllocator.Allocate(norms, 1, ReferenceRange, new OverheadBitCost(0.5)));
        Assert.Contains("--budget", e.Message);
    }

    /// <summary>Nominal bits plus a fixed per-element overhead (as FP16 scale and zero point per group would add).</summary>
    internal sealed class OverheadBitCost(double overhead) : IBitCost
    {
        public string Name => "test";

        public double BitsPerElement(KvTensorKind kind, int layer, double bits, int? groupSize = null) => bits + overhead;
    }
}
