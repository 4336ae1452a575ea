using CsCheck;
using KvAdaQuant.Allocation;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Allocation;

public class PolicyTests
{
    private static readonly NominalBitCost Nominal = new();

    [Theory]
    [InlineData(3, "1,1.58,2,3,4,6,8", 4, 2)]
    [InlineData(4, "1,1.58,2,4,6,8", 6, 2)]
    [InlineData(4, "1,2,3,4,5,6,8", 5, 3)]
    [InlineData(2.5, "1,2,3,4", 3, 2)]
    [InlineData(1, "1,2,4", 1, 1)]
    public void Key_favoring_gives_keys_the_higher_width(double budget, string range, double k, double v)
    {
        var plan = KeyFavoringAllocator.Allocate(6, budget, BitRange.Parse(range), Nominal);
        Assert.All(plan.KeyBits, b => Assert.Equal(k, b));
        Assert.All(plan.ValueBits, b => Assert.Equal(v, b));
    }

    [Theory]
    [InlineData(3, "1,2,3,4", 3)]
    [InlineData(3, "1,2,4,8", 2)]
    [InlineData(8, "1,2,4,8", 8)]
    public void Uniform_takes_the_widest_width_within_budget(double budget, string range, double b)
    {
        var plan = UniformAllocator.Allocate(4, budget, BitRange.Parse(range), Nominal);
        Assert.Equal(BitAllocation.Uniform(4, b, b), plan, new AllocationComparer());
    }

    [Fact]
    public void Uniform_budget_counts_overhead()
    {
        var cost = new NormAwareAllocatorTests.OverheadBitCost(1);
        var plan = UniformAllocator.Allocate(2, 4, BitRange.Parse("1,2,3,4"), cost);
        Assert.All(plan.KeyBits, b => Assert.Equal(3, b));
        Assert.Throws<ArgumentException>(() => UniformAllocator.Allocate(2, 1.5, BitRange.Parse("1,2"), cost));
    }

    [Fact]
    public void Sensitivity_knapsack_equals_brute_force()
    {
        var rng = new Random(7);
        var range = BitRange.Parse("1,2,4,8");
        for (int trial = 0; trial < 20; trial++)
        {
            int layers = 3;
            IReadOnlyList<double>[] Row() => Enumerable.Range(0, layers)
                .Select(_ => (IReadOnlyList<double>)Enumerable.Range(0, 4).Select(j => rng.NextDouble() * Math.Pow(2, -j)).ToArray()).ToArray();
            var profile = new SensitivityProfile(range, Row(), Row(), "random");
            double budget = 1 + (rng.NextDouble() * 5);
            var plan = SensitivityAllocator.Allocate(profile, budget, Nominal);
            Assert.True(plan.AverageBits(Nominal) <= budget + 1e-9);

            double best = double.PositiveInfinity;
            int n = 2 * layers;
            for (int code = 0; code < 1 << (2 * n); code++)
            {
                var bits = Enumerable.Range(0, n).Select(i => range.Widths[(code >> (2 * i)) & 3]).ToArray();
                if (bits.Sum() > (budget * n) + 1e-9)
                {
                    continue;
                }

                var a = new BitAllocation(bits.Where((_, i) => i % 2 == 0).ToArray(), bits.Where((_, i) => i % 2 == 1).ToArray());
                best = Math.Min(best, profile.PredictedKl(a));
            }

            Assert.Equal(best, profile.PredictedKl(plan), 12);
        }
    }

    [Fact]
    public void Group_aware_meets_the_group_budget_and_gives_larger_norms_smaller_groups()
    {
        var norms = LayerNormsReader.Read(Fixtures.Path("reference", "kvq-norms", "spectral_norm", "Llama3.2-1B-it.json"), NormScore.Spectral, NormSource.Weights);
        var plan = GroupAwareAllocator.Allocate(norms, 64, [16, 32, 64, 128], 4, 2);
        var groups = plan.KeyGroups!.Concat(plan.ValueGroups!).ToArray();
        var c = norms.Keys.Concat(norms.Values).ToArray();
        Assert.Equal(2.0 * norms.Layers / 64, groups.Sum(g => 1.0 / g), 6);
        for (int i = 0; i < c.Length; i++)
        {
            for (int j = 0; j < c.Length; j++)
            {
                if (c[i] > c[j] * 1.5)
                {
                    Assert.True(groups[i] <= groups[j], $"norm {c[i]} got group {groups[i]} but norm {c[j]} got {groups[j]}");
                }
            }
        }

        Assert.All(plan.KeyBits, b => Assert.Equal(4, b));
        Assert.All(plan.ValueBits, b => Assert.Equal(2, b));
    }

    [Fact]
    public void Group_aware_plans_never_exceed_the_real_budget_and_are_refused_only_when_nothing_fits()
    {
        // Head dim 64, base groups of 32, FP16 scale + zero point: a group of 8 costs 4 bits per element of parameters alone.
        var cost = new SpecBitCost(new KvSpec(KvBits.Four), new KvSpec(KvBits.Four), headDim: 64, tokens: 512);
        var range = BitRange.Parse("1,1.58,2,3,4,6,8");
        int[] allowed = [8, 16, 32, 64];
        var gen = Gen.Select(
            Gen.Int[1, 8].SelectMany(l => Gen.Double[0.01, 1000].Array[2 * l]),
            Gen.Double[1.5, 12],
            Gen.OneOf(Gen.Const(8), Gen.Const(12), Gen.Const(16), Gen.Const(24), Gen.Const(32), Gen.Const(64)),
            Gen.Int[1, 15].Select(mask => allowed.Where((_, i) => (mask >> i & 1) == 1).ToArray()),
            (n, budget, groupBudget, sizes) => (n, budget, groupBudget, sizes));
        gen.Sample(t =>
        {
            int layers = t.n.Length / 2;
            var norms = new LayerNorms(t.n.Take(layers).ToArray(), t.n.Skip(layers).ToArray(), "random");
            var (kg, vg) = GroupAwareAllocator.Groups(norms, t.groupBudget, t.sizes);
            double floor = new BitAllocation(Enumerable.Repeat(1.0, layers).ToArray(), Enumerable.Repeat(1.0, layers).ToArray(), kg, vg).AverageBits(cost);
            BitAllocation plan;
            try
            {
                plan = GroupAwareAllocator.Allocate(norms, t.groupBudget, t.sizes, t.budget, range, cost);
            }
            catch (ArgumentException e)
            {
                Assert.True(floor > t.budget, $"refused although K1V1 with its groups costs {floor} <= {t.budget}: {e.Message}");
                Assert.Contains("--group-budget", e.Message);
                return;
            }

            Assert.Equal(kg, plan.KeyGroups);
            Assert.Equal(vg, plan.ValueGroups);
            double avg = plan.AverageBits(cost);
            Assert.True(avg <= t.budget + 1e-9, $"{plan}: {avg} real bits over budget {t.budget}");
        });
    }

    [Theory]
    [InlineData("1,7", "width 7")]
    [InlineData("1,x", "'x'")]
    [InlineData("2,2", "twice")]
    [InlineData("", "no widths")]
    public void Bad_bit_ranges_are_rejected(string text, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => BitRange.Parse(text));
        Assert.Contains("--bit-range", e.Message);
        Assert.Contains(expected, e.Message);
    }

    private sealed class AllocationComparer : IEqualityComparer<BitAllocation>
    {
        public bool Equals(BitAllocation? x, BitAllocation? y) => x!.KeyBits.SequenceEqual(y!.KeyBits) && x.ValueBits.SequenceEqual(y.ValueBits);

        public int GetHashCode(BitAllocation obj) => 0;
    }
}
