using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>kvaq verify-decode --kv-plan</c> through the real kvaq executable: the plan files are checked against every model
/// before the device opens, so these errors are the same with or without CUDA (the GPU rows: CudaDecoderTests).
/// </summary>
public class VerifyDecodeCommandTests
{
    [Theory]
    [InlineData("missing", "{0}: file not found")]
    [InlineData("{'layers': [", "{0}: malformed JSON")]
    [InlineData("{'layers': [{'k': {'bits': 7}, 'v': {'bits': 2}}]}", "{0}: layers[0].k.bits 7")]
    [InlineData("{'layers': [{'k': {'bits': 4}, 'v': {'bits': 2}}, {'k': {'bits': 4}, 'v': {'bits': 2}}]}", "{0}: layers has 2 entries but the model stories260K.bin has 5 layers")]
    [InlineData("{'k': {'bits': 4, 'group': 16}, 'v': {'bits': 2}}", "{0}: layers[1].k.group 16")]
    [InlineData("{'k': {'bits': 4, 'axis': 'channel'}, 'v': {'bits': 2}}", "{0}: layer 1 K uses per-channel groups; the GPU decode path quantizes per token only")]
    [InlineData("{'k': {'bits': 4}, 'v': {'bits': 2, 'symmetric': true}}", "{0}: layer 1 V is symmetric; the GPU decode path quantizes asymmetrically only")]
    [InlineData("{'k': {'bits': 4, 'sinks': 4}, 'v': {'bits': 2}}", "{0}: layer 1 K keeps attention sinks; the GPU decode path has none")]
    [InlineData("{'k': {'bits': 4, 'residual': 32}, 'v': {'bits': 2}}", "{0}: layer 1 K keeps a residual window of 32 tokens; the check runs packed caches with one FP16 window of 64 in every layer (GPU 63 + 1, the CPU cache's r64): give residual 0 or 64")]
    [InlineData("{'k': {'bits': 4}, 'v': {'bits': 'fp16'}}", "{0}: layer 1 quantizes only one of K and V; the GPU cache needs both packed or both fp16")]
    [InlineData("{'k': {'bits': 'fp32'}, 'v': {'bits': 'fp32'}}", "{0}: layer 1 is fp32; the GPU cache holds fp16 or packed codes")]
    public void A_plan_that_cannot_be_checked_is_one_error_line_naming_it(string plan, string message)
    {
        // A plan is a whole file (from {'layers') or stories260K's layer 1 between k4v2 layers.
        using var dir = new TempDir();
        string path = dir.File("plan.json");
        if (plan != "missing")
        {
            File.WriteAllText(path, plan.StartsWith("{'layers'", StringComparison.Ordinal) ? plan.Replace('\'', '"') : StoriesPlan(plan));
        }

        var (rc, stdout, stderr) = KvaqProcess.Run("verify-decode", "--model", Fixtures.Stories260K, "--synthetic", "", "--kv-plan", path);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: " + string.Format(System.Globalization.CultureInfo.InvariantCulture, message, $"--kv-plan {path}"), stderr, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', stderr.TrimEnd());
    }

    [Fact]
    public void A_kv_spec_whose_residual_the_gpu_window_cannot_mirror_is_refused_before_the_device_opens()
    {
        // The GPU keeps one FP16 window of 64 tokens; a CPU cache with r32 would be another cache, so the check could fail falsely.
        var (rc, stdout, stderr) = KvaqProcess.Run("verify-decode", "--model", Fixtures.Stories260K, "--synthetic", "", "--kv", "fp16,k4v2:r32");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal(
            "kvaq: error: --kv 'k4v2:r32': keeps a residual window of 32 tokens; the check runs packed caches with one FP16 window of 64 (GPU 63 + 1, the CPU cache's r64): give residual 0 or 64",
            stderr.TrimEnd());
    }

    [Fact]
    public void A_plan_runs_on_the_synthetic_models_too_and_the_error_says_how_to_leave_them_out()
    {
        // stories260K has 5 layers, the synthetic presets 2: the plan fits the --model file and not tiny-llama.
        using var dir = new TempDir();
        string path = dir.File("plan.json");
        File.WriteAllText(path, Uniform(K4V2));
        var (rc, _, stderr) = KvaqProcess.Run("verify-decode", "--model", Fixtures.Stories260K, "--synthetic", "tiny-llama", "--types", "f16", "--kv-plan", path);
        Assert.Equal(1, rc);
        Assert.Equal(
            $"kvaq: error: --kv-plan {path}: layers has 5 entries but the model tiny-llama (--synthetic) has 2 layers; every plan runs on every model: --synthetic '' checks the --model files only",
            stderr.TrimEnd());
    }

    [Theory]
    [InlineData("--batch", "0", "--batch must be at least 1, got 0")]
    [InlineData("--steps", "-1", "--steps must be at least 1, got -1")]
    [InlineData("--greedy", "-5", "--greedy must be at least 0, got -5")]
    [InlineData("--tolerance", "NaN", "--tolerance must be a finite number > 0, got NaN")]
    [InlineData("--packed-tolerance", "-0.01", "--packed-tolerance must be a finite number > 0, got -0.01")]
    [InlineData("--fast-tolerance", "Infinity", "--fast-tolerance must be a finite number > 0, got Infinity")]
    public void Bad_counts_and_bounds_are_refused_before_the_device_opens(string option, string value, string message)
    {
        // They reached the device unchecked: without a driver the error was about CUDA; with one, a NaN or negative bound
        // failed every row and --steps 0 compared nothing.
        var (rc, stdout, stderr) = KvaqProcess.Run("verify-decode", "--model", Fixtures.Stories260K, "--synthetic", "", option, value);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal($"kvaq: error: {message}", stderr.TrimEnd());
    }

    [Theory]
    [InlineData("")]
    [InlineData(" , ")]
    public void An_empty_kv_plan_list_is_an_error(string list)
    {
        var (rc, _, stderr) = KvaqProcess.Run("verify-decode", "--model", Fixtures.Stories260K, "--kv-plan", list);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --kv-plan '{list}': no plan files (expected plan.json or a.json,b.json)", stderr.TrimEnd());
    }

    [SkippableFact]
    public void Good_plans_pass_the_checks_and_reach_the_device()
    {
        // Three plans (comma-separated): an FP16 layer among k4v2 ones, a k8v4 layer with the check's residual of 64, every
        // layer FP16. Without a driver the next error is opening the device, as for --kv specs.
        Skip.If(CudaContext.TryOpen(out CudaContext? context, out _), "this machine has a CUDA device");
        context?.Dispose();
        using var dir = new TempDir();
        string fp16Layer = dir.File("fp16-layer.json"), residual = dir.File("r64.json"), fp16 = dir.File("fp16.json");
        File.WriteAllText(fp16Layer, StoriesPlan("{'k': {'bits': 'fp16'}, 'v': {'bits': 'fp16'}}"));
        File.WriteAllText(residual, StoriesPlan("{'k': {'bits': 8, 'residual': 64}, 'v': {'bits': 4, 'residual': 64}}"));
        File.WriteAllText(fp16, Uniform("{'k': {'bits': 'fp16'}, 'v': {'bits': 'fp16'}}"));
        var (rc, stdout, stderr) = KvaqProcess.Run("verify-decode", "--model", Fixtures.Stories260K, "--synthetic", "", "--kv", "", "--kv-plan", $"{fp16Layer},{residual},{fp16}");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: --device cuda: ", stderr, StringComparison.Ordinal);
    }

    private const string K4V2 = "{'k': {'bits': 4}, 'v': {'bits': 2}}";

    /// <summary>A plan for stories260K (5 layers, head dim 8): <paramref name="layer1"/> as layer 1, the others k4v2 (' for ").</summary>
    private static string StoriesPlan(string layer1) => $"{{'layers': [{K4V2}, {layer1}, {K4V2}, {K4V2}, {K4V2}]}}".Replace('\'', '"');

    /// <summary>A plan for stories260K giving every layer <paramref name="layer"/> (' for ").</summary>
    private static string Uniform(string layer) => $"{{'layers': [{string.Join(", ", Enumerable.Repeat(layer, 5))}]}}".Replace('\'', '"');
}
