using KvAdaQuant.Allocation;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Allocation;

/// <summary>
/// The up-front budget checks (<c>CheckBudget</c>, needing only the shape) refuse exactly the budgets the allocators
/// refuse for being below the cheapest width, with the allocator's message, and accept every budget they allocate for.
/// </summary>
public class BudgetCheckTests
{
    public static TheoryData<string, int, string> Cases()
    {
        var data = new TheoryData<string, int, string>();
        foreach (var cost in new[] { "nominal", "overhead", "real", "real-r64" })
        {
            foreach (int layers in new[] { 1, 3 })
            {
                foreach (var range in new[] { "1,1.58,2,3,4,6,8", "4,8", "2,3" })
                {
                    data.Add(cost, layers, range);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Each_check_refuses_what_its_allocator_refuses_for_the_budget_with_the_same_message(string costName, int layers, string rangeText)
    {
        IBitCost cost = costName switch
        {
            "nominal" => new NominalBitCost(),
            "overhead" => new NormAwareAllocatorTests.OverheadBitCost(0.37),
            "real" => new SpecBitCost(new KvSpec(KvBits.Four, 8), new KvSpec(KvBits.Four, 8), headDim: 8, tokens: 16),
            _ => new SpecBitCost(new KvSpec(KvBits.Four, 32, Residual: 64), new KvSpec(KvBits.Four, 32, Residual: 64), headDim: 64, tokens: 300),
        };
        var range = BitRange.Parse(rangeText);
        var floor = BitAllocation.Uniform(layers, range.Min, range.Min).AverageBits(cost);
        var norms = new LayerNorms(Enumerable.Range(0, layers).Select(l => 1.0 + l).ToArray(), Enumerable.Range(0, layers).Select(l => 0.5 + l).ToArray(), "test");
        IReadOnlyList<double>[] Kl(double scale) => Enumerable.Range(0, layers)
            .Select(l => (IReadOnlyList<double>)range.Widths.Select(w => scale * (l + 1) * Math.Pow(2, -w)).ToArray()).ToArray();
        var profile = new SensitivityProfile(range, Kl(1), Kl(0.5), "test");

        int refused = 0;
        int allocated = 0;
        var budgets = Enumerable.Range(-20, 41).Select(i => floor + (i * 0.05)).Append(floor).Append(floor - 1e-9).Where(b => b > 0);
        foreach (var budget in budgets)
        {
            var policies = new (string Name, Action Check, Func<BitAllocation> Allocate)[]
            {
                ("uniform", () => UniformAllocator.CheckBudget(layers, budget, range, cost), () => UniformAllocator.Allocate(layers, budget, range, cost)),
                ("key-favoring", () => UniformAllocator.CheckBudget(layers, budget, range, cost), () => KeyFavoringAllocator.Allocate(layers, budget, range, cost)),
                ("norm-aware", () => NormAwareAllocator.CheckBudget(layers, budget, range, cost), () => NormAwareAllocator.Allocate(norms, budget, range, cost)),
                ("sensitivity", () => SensitivityAllocator.CheckBudget(layers, range, budget, cost), () => SensitivityAllocator.Allocate(profile, budget, cost)),
            };
            foreach (var (name, check, allocate) in policies)
            {
                string? allocateError = Error(() => allocate());
                string? checkError = Error(check);
                Assert.True(allocateError == checkError, $"{name} at budget {budget} (floor {floor}): allocate says '{allocateError}', the check says '{checkError}'");
                if (checkError is null)
                {
                    allocated++;
                }
                else
                {
                    Assert.StartsWith($"--budget {BitAllocation.Format(budget)}: even ", checkError);
                    refused++;
                }
            }
        }

        // Both sides of the floor were tried.
        Assert.True(refused > 0 && allocated > 0, $"refused {refused}, allocated {allocated}");
    }

    private static string? Error(Action action)
    {
        try
        {
            action();
            return null;
        }
        catch (ArgumentException e)
        {
            return e.Message;
        }
    }
}
