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
    [InlineData("stories3M-q80", "k3v3", "8,16,32", "12")]
    [InlineData("stories3M-q80", "k3v3", "8,16,32", "16")]
    [InlineData("stories3M-q80", "k3v3", "8,16,32", "32")]
    [InlineData("stories3M-q80", "6", "8,16,32", "16")]
    [InlineData("stories260K", "12", "2,4,8", "6")]
    [InlineData("stories260K", "k4v4", "4,8", "6")]
    public void Group_aware_plans_are_within_their_real_budget(string model, string budget, string sizes, string groupBudget)
    {
        using var dir = new TempDir();
        var plan = dir.File("plan.json");
        int rc = Program.BuildRoot().Parse(["allocate", "--model", model, "--policy", "group-aware", "--budget", budget, "--group-sizes", sizes, "--group-budget", groupBudget,
            "--calib-tokens", "32", "--ctx", "512", "--out", plan, "--threads", "2"]).Invoke();
        Assert.Equal(0, rc);
        var p = KvPlan.Load(plan);
        int kvHeads = model == "stories260K" ? 4 : 2;
        int headDim = model == "stories260K" ? 8 : 32;
        double avg = p.AverageBits(kvHeads, headDim, 512);
        double bits = budget.StartsWith('k') ? KvPlan.Parse(budget, p.Layers.Count).AverageBits(kvHeads, headDim, 512) : double.Parse(budget, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(avg <= bits + 1e-9, $"{avg} > {bits}");
        if (int.Parse(groupBudget, System.Globalization.CultureInfo.InvariantCulture) < headDim)
        {
            Assert.Contains(p.Layers, l => l.K.GroupSize < headDim || l.V.GroupSize < headDim);
        }
    }

    [Theory]
    [InlineData("stories3M-q80", "8,16,32", "8", "--group-budget 8: with the groups it gives")]
    [InlineData("stories260K", "2,4,8", "4", "--group-budget 4: with the groups it gives")]
    [InlineData("stories260K", "8,16,32", "16", "--group-sizes 8,16,32: group 16 is larger than the head dimension 8")]
    public void Group_aware_refuses_groups_no_plan_fits(string model, string sizes, string groupBudget, string expected)
    {
        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run("allocate", "--model", Fixtures.Path("models", model), "--policy", "group-aware", "--budget", "k3v3",
            "--group-sizes", sizes, "--group-budget", groupBudget, "--calib-tokens", "32", "--threads", "2");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: " + expected, stderr);
        Assert.DoesNotContain("   at ", stderr);
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

    [Theory]
    [InlineData("--ctx -5", "--ctx must be >= 0 (0 = the model's context length), got -5")]
    [InlineData("--head-dim -8", "--head-dim must be a positive multiple of 8 (quantized caches pack 8 values at a time), got -8")]
    [InlineData("--head-dim 12", "--head-dim must be a positive multiple of 8")]
    [InlineData("--head-dim 32 --spec g64", "--spec 'g64': k.group 64 is larger than the head dimension 32")]
    [InlineData("--spec bogus", "--spec 'bogus': unknown option 'bogus'")]
    [InlineData("--budget k7v7", "--budget 'k7v7': width 7 is not one of 1, 1.58")]
    [InlineData("--budget k7v7 --accounting nominal", "--budget 'k7v7': width 7 is not one of 1, 1.58")]
    [InlineData("--policy fixed --fixed k7v2", "--fixed 'k7v2': width 7 is not one of 1, 1.58")]
    [InlineData("--policy fixed --fixed k1.2.3v2", "--fixed 'k1.2.3v2': the fixed policy needs a pair such as k4v2")]
    public void Bad_options_are_named_in_one_line(string options, string expected)
    {
        var args = new List<string> { "allocate", "--stats", Fixtures.Path("reference", "kvq-norms", "frobenius_norm", "Llama3.2-1B-it.json"), "--norm-source", "weights" };
        args.AddRange(options.Split(' '));
        if (!options.Contains("--budget", StringComparison.Ordinal) && !options.Contains("fixed", StringComparison.Ordinal))
        {
            args.AddRange(["--budget", "4"]);
        }

        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run(args.ToArray());
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: " + expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Theory]
    [InlineData("--fixed k4v2", "--fixed applies only to --policy fixed (the policy is norm-aware)")]
    [InlineData("--policy uniform --group-sizes 8", "--group-sizes applies only to --policy group-aware (the policy is uniform)")]
    [InlineData("--policy fixed --fixed k4v2 --group-budget 16", "--group-budget applies only to --policy group-aware (the policy is fixed)")]
    [InlineData("--head-dim 64", "--head-dim applies only without a model (--stats with the reference's norms); the model")]
    [InlineData("--ctx 100000", "--ctx must be in 0..512 (0 = the model's context length), got 100000")]
    public void Options_that_would_be_ignored_or_exceed_the_model_are_refused(string options, string expected)
    {
        // Each used to be accepted silently: another policy's option ignored, --head-dim ignored for the model's, and
        // the real cost counted at a context the model cannot hold.
        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run(["allocate", "--model", Fixtures.Stories260K, "--budget", "k4v4", "--calib-tokens", "16", "--threads", "1", .. options.Split(' ')]);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: " + expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Theory]
    [InlineData("1.58", "3", "no pair with K > V over widths 1.58 fits the budget, so key-favoring gives K = V = 1.58")]
    [InlineData("1,1.58,2,3,4", "k1v1", "no pair with K > V over widths 1,1.58,2,3,4 fits the budget, so key-favoring gives K = V = 1")]
    [InlineData("1,1.58,2,3,4", "k3v3", null)]
    public void Key_favoring_says_when_it_gives_K_equal_to_V(string range, string budget, string? note)
    {
        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run("allocate", "--model", Fixtures.Stories3M, "--policy", "key-favoring", "--bit-range", range, "--budget", budget, "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var k = doc.RootElement.GetProperty("k_bits").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        var v = doc.RootElement.GetProperty("v_bits").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        var n = doc.RootElement.GetProperty("note");
        if (note is null)
        {
            Assert.Equal(JsonValueKind.Null, n.ValueKind);
            Assert.All(k.Zip(v), p => Assert.True(p.First > p.Second));
        }
        else
        {
            Assert.StartsWith(note, n.GetString());
            Assert.Equal(k, v);
        }
    }

    [Fact]
    public void Stats_for_another_layer_count_are_refused()
    {
        int rc = Program.BuildRoot().Parse(["allocate", "--model", "stories260K", "--stats", Fixtures.Path("reference", "kvq-norms", "frobenius_norm", "Llama3.2-1B-it.json"),
            "--norm-source", "weights", "--budget", "4"]).Invoke();
        Assert.Equal(1, rc);
    }
}
