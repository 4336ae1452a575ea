using System.Text.Json;

namespace KvAdaQuant.Tests.Cli;

/// <summary>--kv / --kv-plan through the real kvaq executable.</summary>
public class KvOptionsCliTests
{
    [Fact]
    public void InfoReportsExactKvBytesWithTheFp16Baseline()
    {
        var (rc, stdout, stderr) = Kvaq("info", "--model", Fixtures.Stories3M, "--kv", "k4v2:g32:pt:asym", "--ctx", "512", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal(384, root.GetProperty("kv_bytes_per_token").GetDouble());
        Assert.Equal(384 * 512, root.GetProperty("kv_bytes").GetInt64());
        Assert.Equal(1536, root.GetProperty("kv_bytes_per_token_fp16").GetInt64());
        Assert.Equal(1536 * 512, root.GetProperty("kv_bytes_fp16").GetInt64());
        Assert.Equal(4.0, root.GetProperty("kv_bits_per_element").GetDouble());
    }

    [Fact]
    public void PlanFileDrivesGenerate()
    {
        using var dir = new TempDir();
        var plan = dir.File("plan.json");
        File.WriteAllText(plan, """
            {"name": "test-plan", "layers": [
              {"k": {"bits": 8}, "v": {"bits": 8}}, {"k": {"bits": 8}, "v": {"bits": 8}}, {"k": {"bits": 8}, "v": {"bits": 8}},
              {"k": {"bits": 8}, "v": {"bits": 8}}, {"k": {"bits": 8}, "v": {"bits": 8}}]}
            """);
        var (rc, stdout, stderr) = Kvaq("generate", "--model", Fixtures.Stories260K, "--kv-plan", plan, "-n", "20", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("test-plan", doc.RootElement.GetProperty("kv").GetString());
        Assert.Equal(20, doc.RootElement.GetProperty("tokens").GetArrayLength());
    }

    [Theory]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 7}, \"v\": {\"bits\": 2}}]}", "layers[0].k.bits 7")]
    [InlineData("{\"layers\": [{\"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers has 1 entries but the model has 5 layers")]
    [InlineData("{\"layers\": [", "malformed JSON")]
    [InlineData("{\"layers\": [{\"layer\": \"0\", \"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers[0].layer must be a whole number (the entry's index, 0), found \"0\"")]
    [InlineData("{\"layers\": [{\"layer\": null, \"k\": {\"bits\": 4}, \"v\": {\"bits\": 2}}]}", "layers[0].layer must be a whole number (the entry's index, 0), found null")]
    public void BadPlanFileIsOneClearErrorLine(string json, string message)
    {
        using var dir = new TempDir();
        var plan = dir.File("bad.json");
        File.WriteAllText(plan, json);
        var (rc, _, stderr) = Kvaq("perplexity", "--model", Fixtures.Stories260K, "--data", "wikitext-2/wiki.test.raw", "--kv-plan", plan);
        Assert.Equal(1, rc);
        Assert.StartsWith($"kvaq: error: --kv-plan {plan}: ", stderr);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain('\n', stderr.TrimEnd());
    }

    [Fact]
    public void KvAndKvPlanTogetherAreRejected()
    {
        var (rc, _, stderr) = Kvaq("info", "--model", Fixtures.Stories260K, "--kv", "k4v4", "--kv-plan", "x.json");
        Assert.Equal(1, rc);
        Assert.Contains("are exclusive", stderr);
    }

    [Fact]
    public void GenerateSizesItsCacheForTheRunUnlessToldOtherwise()
    {
        // stories260K's context is 512: an empty prompt (BOS) and 4 tokens get the 256-position floor, --ctx wins.
        var (rc, stdout, stderr) = Kvaq("generate", "--model", Fixtures.Stories260K, "-n", "4", "--json");
        Assert.True(rc == 0, stderr);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal(256, doc.RootElement.GetProperty("ctx").GetInt32());
            Assert.Equal(4, doc.RootElement.GetProperty("tokens").GetArrayLength());
        }

        (rc, stdout, stderr) = Kvaq("generate", "--model", Fixtures.Stories260K, "-n", "400", "--json");
        Assert.True(rc == 0, stderr);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal(401, doc.RootElement.GetProperty("ctx").GetInt32());
        }

        (rc, stdout, stderr) = Kvaq("generate", "--model", Fixtures.Stories260K, "-n", "4", "--ctx", "300", "--json");
        Assert.True(rc == 0, stderr);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal(300, doc.RootElement.GetProperty("ctx").GetInt32());
        }
    }

    [Fact]
    public void VerifyDecodeRejectsSensitivityNoiseOutsideTheUnitInterval()
    {
        // Checked before any device is opened, so the error is the same with or without CUDA.
        var (rc, _, stderr) = Kvaq("verify-decode", "--model", Fixtures.Stories260K, "--sensitivity-noise", "1.5");
        Assert.Equal(1, rc);
        Assert.Contains("--sensitivity-noise: 1.5 is not in [0, 1)", stderr);
    }

    private static (int Rc, string Stdout, string Stderr) Kvaq(params string[] args) => KvaqProcess.Run(args);
}
