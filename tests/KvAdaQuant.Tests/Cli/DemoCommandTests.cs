using KvAdaQuant.Cli;

namespace KvAdaQuant.Tests.Cli;

/// <summary><c>kvaq demo</c> on stories260K with tiny chunks: the report states what was evaluated; bad options are named.</summary>
public class DemoCommandTests
{
    [Fact]
    public void Chunks_zero_reports_the_chunks_actually_evaluated()
    {
        using var dir = new TempDir();
        int rc = Program.BuildRoot().Parse(["demo", "--model", "stories260K", "--chunks", "0", "--ctx", "16", "--calib-tokens", "16", "--out", dir.Path, "--threads", "2", "--json"]).Invoke();
        Assert.Equal(0, rc);

        // The evaluator's default for 0 is 8 chunks; each scores the 7 positions of its second half (after the first).
        var report = File.ReadAllText(dir.File("report.md"));
        Assert.Contains(", 8 chunks of 16 tokens,", report);
        var fp16 = File.ReadAllLines(dir.File("results.csv")).Single(l => l.StartsWith("FP16,", StringComparison.Ordinal)).Split(',');
        Assert.Equal("56", fp16[4]);
    }

    [Fact]
    public void The_demo_adds_the_rotated_split_unless_the_spec_rotates_already()
    {
        string[] Caches(string dir, params string[] extra)
        {
            int rc = Program.BuildRoot().Parse(["demo", "--model", "stories260K", "--chunks", "2", "--ctx", "16", "--calib-tokens", "16", "--out", dir, "--threads", "2", "--json", .. extra]).Invoke();
            Assert.Equal(0, rc);
            return File.ReadAllLines(Path.Combine(dir, "results.csv")).Skip(1).Select(l => l.Split(',')[0]).ToArray();
        }

        using var plain = new TempDir();
        Assert.Equal(["FP16", "K4V2", "K2V4", "K3V3", "K4V2:rot", "key-favoring @k3v3", "norm-aware @k3v3", "sensitivity @k3v3"], Caches(plain.Path));
        Assert.Contains("channel peak (largest channel norm / RMS channel norm) by layer, K: ", File.ReadAllText(plain.File("report.md")));
        // --spec rot: every cache rotated, the allocators' unquantized widths left unrotated (the sensitivity profile runs
        // one tensor at FP32, which once took the base spec's rot and was refused), no extra row.
        using var rotated = new TempDir();
        Assert.DoesNotContain("K4V2:rot", Caches(rotated.Path, "--spec", "rot"));
    }

    [Theory]
    [InlineData("--chunks", "-1", "--chunks must be >= 0 (0: the evaluator's default, 8), got -1")]
    [InlineData("--ctx", "0", "--ctx must be at least 4 (tokens per evaluation chunk), got 0")]
    [InlineData("--spec", "g64", "--spec 'g64': k.group 64 is larger than the head dimension 8")]
    [InlineData("--calib-tokens", "0", "--calib-tokens must be in 8..512, got 0")] // was found after "model ..." was printed and --out made
    [InlineData("--chunks", "2147483647", "--chunks 2147483647 of --ctx 256 tokens of sampled text are 549755813632 tokens, more than one stream holds (2147483647)")] // overflowed: "need positive token counts, got -256 total", after the analysis
    public void Bad_options_are_named(string option, string value, string expected)
    {
        using var dir = new TempDir();
        var (rc, stdout, stderr) = KvaqProcess.Run("demo", "--model", Fixtures.Stories260K, option, value, "--out", dir.Path, "--threads", "2");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: " + expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("report.md")));
    }
}
