using System.Text.Json;

namespace KvAdaQuant.Tests.Cli;

/// <summary><c>kvaq compare</c>'s option checks through the real kvaq executable (the llama.cpp runs are in LlamaCpp/BenchCommandTests).</summary>
public class CompareCommandTests
{
    [Theory]
    [InlineData("")]
    [InlineData(" , ")]
    public void Empty_kv_and_vs_cache_lists_are_an_error_naming_both(string kv)
    {
        // Both empty printed a table of no rows and exited 0.
        var (rc, stdout, stderr) = KvaqProcess.Run("compare", "--model", Fixtures.Stories260K, "--data", "wikitext-2/wiki.test.raw", "--kv", kv, "--vs-cache", "");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal("kvaq: error: --kv and --vs-cache are both empty and no --kv-plan is given: nothing to compare", stderr.TrimEnd());
    }

    [Fact]
    public void Negative_chunks_are_an_error_before_the_model_loads()
    {
        // -1 was silently taken as all chunks.
        var (rc, stdout, stderr) = KvaqProcess.Run("compare", "--model", "no-such-model", "--data", "wikitext-2/wiki.test.raw", "--kv", "k4v2", "--chunks", "-1");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal("kvaq: error: --chunks must be >= 0 (0 = all), got -1", stderr.TrimEnd());
    }

    [Fact]
    public void A_uniform_plan_row_equals_the_same_kv_spec_exactly()
    {
        // stories260K has 5 layers; a plan giving each k4v4 is the --kv k4v4 cache, so the perplexities are equal to the bit.
        using var dir = new TempDir();
        var plan = WritePlan(dir, "k4v4.json", "uniform-k4v4", Enumerable.Repeat((4, 4), 5));
        var (rc, stdout, stderr) = KvaqProcess.Run([.. Small, "--kv", "fp32,k4v4", "--kv-plan", plan, "--json"]);
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        Assert.Equal(["fp32", "k4v4", "uniform-k4v4"], rows.Select(row => row.GetProperty("cache").GetString()));
        Assert.All(rows, row => Assert.Equal("kvaq", row.GetProperty("engine").GetString()));
        Assert.Equal(JsonValueKind.Null, rows[0].GetProperty("kv_plan").ValueKind);
        Assert.Equal(JsonValueKind.Null, rows[1].GetProperty("kv_plan").ValueKind);
        Assert.Equal(plan, rows[2].GetProperty("kv_plan").GetString());
        Assert.Equal(rows[1].GetProperty("perplexity").GetDouble(), rows[2].GetProperty("perplexity").GetDouble());
        Assert.Equal(rows[1].GetProperty("tokens_scored").GetInt32(), rows[2].GetProperty("tokens_scored").GetInt32());
        Assert.NotEqual(rows[0].GetProperty("perplexity").GetDouble(), rows[2].GetProperty("perplexity").GetDouble());
    }

    [Fact]
    public void Plans_alone_are_rows_named_after_the_plan_and_its_file()
    {
        // --kv "" and --vs-cache "" with plans: the plans are something to compare. Two files, comma-separated, in order.
        using var dir = new TempDir();
        var uniform = WritePlan(dir, "k4v4.json", "uniform-k4v4", Enumerable.Repeat((4, 4), 5));
        var mixed = WritePlan(dir, "mixed.json", "k-heavy", [(8, 2), (4, 2), (4, 2), (4, 2), (2, 2)]);
        var (rc, stdout, stderr) = KvaqProcess.Run([.. Small, "--kv", "", "--kv-plan", $"{uniform}, {mixed}"]);
        Assert.True(rc == 0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(5, lines.Length);
        Assert.StartsWith($"| kvaq | uniform-k4v4 (--kv-plan {uniform}) | ", lines[3], StringComparison.Ordinal);
        Assert.StartsWith($"| kvaq | k-heavy (--kv-plan {mixed}) | ", lines[4], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("missing", "--kv-plan {0}: file not found")]
    [InlineData("{\"layers\": [", "--kv-plan {0}: malformed JSON")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 7}, \"v\": {\"bits\": 2}}]}", "--kv-plan {0}: layers[0].k.bits 7")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"bits\": 4}}]}", "--kv-plan {0}: layers has 1 entries but the model has 5 layers")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4, \"group\": 16}, \"v\": {\"bits\": 4}}, {\"k\": {\"bits\": 4}, \"v\": {\"bits\": 4}}, {\"k\": {\"bits\": 4}, \"v\": {\"bits\": 4}}, {\"k\": {\"bits\": 4}, \"v\": {\"bits\": 4}}, {\"k\": {\"bits\": 4}, \"v\": {\"bits\": 4}}]}", "--kv-plan {0}: layers[0].k.group 16")]
    public void A_bad_plan_file_is_one_error_line_before_any_row_runs(string json, string message)
    {
        // The --kv row before the plan does not run either: every cache is checked against the model first.
        using var dir = new TempDir();
        var plan = dir.File("plan.json");
        if (json != "missing")
        {
            File.WriteAllText(plan, json);
        }

        var (rc, stdout, stderr) = KvaqProcess.Run([.. Small, "--kv", "k4v4", "--kv-plan", plan]);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: " + string.Format(System.Globalization.CultureInfo.InvariantCulture, message, plan), stderr, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', stderr.TrimEnd());
    }

    [Theory]
    [InlineData("")]
    [InlineData(" , ")]
    public void An_empty_kv_plan_list_is_an_error_not_no_plans(string list)
    {
        // --kv "" means no kvaq rows, but --kv-plan has no default: given empty, a file name is missing.
        var (rc, stdout, stderr) = KvaqProcess.Run("compare", "--model", "no-such-model", "--data", "wikitext-2/wiki.test.raw", "--kv-plan", list);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal($"kvaq: error: --kv-plan '{list}': no plan files (expected plan.json or a.json,b.json)", stderr.TrimEnd());
    }

    [Fact]
    public void A_kv_spec_that_does_not_fit_the_model_fails_before_the_plans_run()
    {
        // Specs are checked against the model with the plans, before the first row (it failed after the earlier rows had run).
        using var dir = new TempDir();
        var plan = WritePlan(dir, "k4v4.json", "uniform-k4v4", Enumerable.Repeat((4, 4), 5));
        var (rc, stdout, stderr) = KvaqProcess.Run([.. Small, "--kv", "k4v4,k4v4:g16", "--kv-plan", plan]);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: --kv 'k4v4:g16': ", stderr, StringComparison.Ordinal);
    }

    /// <summary>compare on stories260K (head dim 8, 5 layers), 3,000 characters in chunks of 128, kvaq rows only.</summary>
    private static readonly string[] Small =
        ["compare", "--model", Fixtures.Stories260K, "--data", "wikitext-2/wiki.test.raw", "--chars", "3000", "--ctx", "128", "--threads", "1", "--vs-cache", ""];

    private static string WritePlan(TempDir dir, string file, string name, IEnumerable<(int K, int V)> layers)
    {
        var path = dir.File(file);
        var rows = layers.Select(l => $"{{\"k\": {{\"bits\": {l.K}}}, \"v\": {{\"bits\": {l.V}}}}}");
        File.WriteAllText(path, $"{{\"name\": \"{name}\", \"layers\": [{string.Join(", ", rows)}]}}");
        return path;
    }
}
