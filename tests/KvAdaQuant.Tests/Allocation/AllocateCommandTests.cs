using System.Text.Json;
using KvAdaQuant.Cli;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Allocation;

/// <summary><c>kvaq allocate</c> end to end: plan files, budgets, bad input.</summary>
public class AllocateCommandTests
{
    [Fact]
    public void Reference_norms_give_the_reference_plan_as_a_loadable_plan_file()
    {
        using var dir = new TempDir();
        var plan = dir.File("plan.json");
        int rc = Program.BuildRoot().Parse(["allocate", "--stats", Fixtures.Path("reference", "kvq-norms", "frobenius_norm", "Llama3.2-1B-it.json"),
            "--budget", "4", "--bit-range", "1,1.58,2,4,6,8", "--norm-source", "weights", "--accounting", "nominal", "--out", plan]).Invoke();
        Assert.Equal(0, rc);
        var p = KvPlan.Load(plan);
        Assert.Equal(16, p.Layers.Count);
        Assert.Equal([6, 6, 4, 4], p.Layers.Take(4).Select(l => l.K.Bits.NominalBits()));
        Assert.Equal([2, 2, 4, 4], p.Layers.Take(4).Select(l => l.V.Bits.NominalBits()));
        using var doc = JsonDocument.Parse(File.ReadAllText(plan));
        var description = doc.RootElement.GetProperty("description").GetString()!;
        Assert.Contains("policy norm-aware", description);
        Assert.Contains("Llama3.2-1B-it.json", description);
        Assert.Contains("nominal 4", description);
    }

    [Fact]
    public void Real_budget_of_K3V3_is_met_exactly_by_every_policy_on_stories260K()
    {
        using var dir = new TempDir();
        foreach (var policy in new[] { "uniform", "key-favoring", "norm-aware" })
        {
            var plan = dir.File(policy + ".json");
            int rc = Program.BuildRoot().Parse(["allocate", "--model", "stories260K", "--policy", policy, "--budget", "k3v3", "--calib-tokens", "32", "--out", plan, "--threads", "2"]).Invoke();
            Assert.Equal(0, rc);
            var p = KvPlan.Load(plan);
            double avg = p.AverageBits(4, 8, 512);
            double budget = KvPlan.Parse("k3v3", 5).AverageBits(4, 8, 512);
            Assert.True(avg <= budget + 1e-9, $"{policy}: {avg} > {budget}");
        }
    }

    [Theory]
    [InlineData("--budget", "abc")]
    [InlineData("--budget", "-1")]
    [InlineData("--bit-range", "1,7")]
    [InlineData("--policy", "best")]
    [InlineData("--score", "l1")]
    [InlineData("--spec", "g7")]
    public void Bad_options_exit_with_code_one(string option, string value)
    {
        var args = new List<string> { "allocate", "--stats", Fixtures.Path("reference", "kvq-norms", "frobenius_norm", "Llama3.2-1B-it.json"), "--norm-source", "weights" };
        if (option != "--budget")
        {
            args.AddRange(["--budget", "4"]);
        }

        args.AddRange([option, value]);
        Assert.Equal(1, Program.BuildRoot().Parse(args.ToArray()).Invoke());
    }

    [Fact]
    public void Stats_for_another_layer_count_are_refused()
    {
        int rc = Program.BuildRoot().Parse(["allocate", "--model", "stories260K", "--stats", Fixtures.Path("reference", "kvq-norms", "frobenius_norm", "Llama3.2-1B-it.json"),
            "--norm-source", "weights", "--budget", "4"]).Invoke();
        Assert.Equal(1, rc);
    }
}
