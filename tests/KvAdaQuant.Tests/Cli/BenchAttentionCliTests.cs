using System.Text.Json;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>kvaq bench --attention</c> through the real executable: tiny shapes, small contexts, one run; the figures are
/// checked for consistency and exact byte counts, never for speed.
/// </summary>
public class BenchAttentionCliTests
{
    [Fact]
    public void Json_HasTheNamedKeysAndThePlansExactBytes()
    {
        // tiny-llama-64: 2 layers, 2 KV heads x 2 query heads, head dim 64; k4v2 is 64 bytes a position and KV head.
        var (rc, stdout, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama-64", "--kv", "k4v2", "--ctx", "128,300", "--threads", "2", "--runs", "1", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal("attention", root.GetProperty("mode").GetString());
        Assert.Equal("tiny-llama-64", root.GetProperty("shape").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("model").ValueKind);
        Assert.Equal("k4v2", root.GetProperty("kv").GetString());
        Assert.Equal("fp32", root.GetProperty("attention").GetString());
        Assert.Equal(2, root.GetProperty("threads").GetInt32());
        Assert.Equal(1, root.GetProperty("runs").GetInt32());
        Assert.Equal(2, root.GetProperty("kv_heads").GetInt32());
        Assert.Equal(64, root.GetProperty("head_dim").GetInt32());
        var contexts = root.GetProperty("contexts").EnumerateArray().ToArray();
        Assert.Equal([128, 300], contexts.Select(c => c.GetProperty("ctx").GetInt32()));
        foreach (var c in contexts)
        {
            int ctx = c.GetProperty("ctx").GetInt32();
            long bytes = c.GetProperty("attention.bytes_per_step").GetInt64();
            Assert.Equal(2L * ctx * 64, bytes);
            Assert.Equal(KvPlan.Parse("k4v2", 1).BytesAt(2, 64, ctx), bytes);
            Assert.Equal(2, c.GetProperty("attention.layers").GetInt32()); // the shape's 2 layers: far under 256 MiB
            Assert.Equal(2 * bytes, c.GetProperty("attention.bytes_cycled").GetInt64());
            AssertConsistent(c);
        }

        Assert.Contains("note: all 2 layers of the shape hold only", KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama-64", "--kv", "k4v2", "--ctx", "64", "--runs", "1").Stderr);
    }

    [Fact]
    public void Fp16BytesAndOneThread()
    {
        // tiny-llama: head dim 16, 2 KV heads; FP16 K and V are 2 x 2 x 16 x 2 bytes a position.
        var (rc, stdout, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama", "--ctx", "100", "--threads", "1", "--runs", "2", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("fp16", doc.RootElement.GetProperty("kv").GetString()); // the bench's default cache
        Assert.Equal(1, doc.RootElement.GetProperty("threads").GetInt32());
        var c = doc.RootElement.GetProperty("contexts")[0];
        Assert.Equal(2L * 2 * 16 * 2 * 100, c.GetProperty("attention.bytes_per_step").GetInt64());
        AssertConsistent(c, runs: 2, threads: 1);
    }

    [SkippableFact]
    public void ByteValuesRunInEveryLayer()
    {
        Skip.IfNot(KvAdaQuant.Numerics.Int8ValueKernels.IsSupported, "AVX-512 VBMI not available");
        var (rc, stdout, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama-64", "--kv", "k4v2", "--ctx", "200", "--runs", "1", "--attn-int8-values", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("int8-values", doc.RootElement.GetProperty("attention").GetString());
        var c = doc.RootElement.GetProperty("contexts")[0];
        Assert.Equal(2, c.GetProperty("attention.int8_value_layers").GetInt32());
        Assert.Equal(2, c.GetProperty("attention.int8_layers").GetInt32());
        AssertConsistent(c);
    }

    [Fact]
    public void AModelFileSuppliesTheShapeAndTheTableIsPrinted()
    {
        var config = LoadConfig(Fixtures.Stories260K);
        var (rc, stdout, stderr) = KvaqProcess.Run("bench", "--attention", "--model", Fixtures.Stories260K, "--kv", "k8v8", "--ctx", "64", "--runs", "1", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(Fixtures.Stories260K, doc.RootElement.GetProperty("model").GetString());
        Assert.Equal(config.Layers, doc.RootElement.GetProperty("layers").GetInt32());
        Assert.Equal(config.KvHeads, doc.RootElement.GetProperty("kv_heads").GetInt32());
        Assert.Equal(config.Heads, doc.RootElement.GetProperty("query_heads").GetInt32());
        Assert.Equal(config.HeadDim, doc.RootElement.GetProperty("head_dim").GetInt32());
        Assert.Equal(KvPlan.Parse("k8v8", 1).BytesAt(config.KvHeads, config.HeadDim, 64), doc.RootElement.GetProperty("contexts")[0].GetProperty("attention.bytes_per_step").GetInt64());

        (rc, stdout, stderr) = KvaqProcess.Run("bench", "--attention", "--model", Fixtures.Stories260K, "--ctx", "64", "--runs", "1");
        Assert.True(rc == 0, stderr);
        Assert.Contains($"attention alone: {Fixtures.Stories260K}", stdout);
        Assert.Contains("triad GB/s", stdout);
        Assert.Contains("filling", stderr);
    }

    [Fact]
    public void APlanFileRunsItsLayers()
    {
        using var dir = new TempDir();
        var plan = dir.File("plan.json");
        File.WriteAllText(plan, """{"name": "two-widths", "layers": [{"k": {"bits": 8}, "v": {"bits": 4}}, {"k": {"bits": 4}, "v": {"bits": 2}}]}""");
        var (rc, stdout, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama-64", "--kv-plan", plan, "--ctx", "128", "--runs", "1", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("two-widths", doc.RootElement.GetProperty("kv").GetString());
        Assert.Equal(plan, doc.RootElement.GetProperty("kv_plan").GetString());
        var c = doc.RootElement.GetProperty("contexts")[0];
        long cycled = KvPlan.Load(plan).BytesAt(2, 64, 128);
        Assert.Equal(cycled, c.GetProperty("attention.bytes_cycled").GetInt64());
        Assert.Equal(cycled / 2, c.GetProperty("attention.bytes_per_step").GetInt64());
        AssertConsistent(c);
    }

    [Theory]
    [InlineData("--vs", "llama.cpp")]
    [InlineData("--vs-cache", "f16")]
    [InlineData("--decode-tokens", "8")]
    [InlineData("--prefill-runs", "1")]
    [InlineData("--batch", "2")]
    [InlineData("--fit", null)]
    [InlineData("--tokenizer", "tok.bin")]
    public void OptionsItDoesNotUseAreNamed(string option, string? value)
    {
        string[] args = ["bench", "--attention", "--shape", "tiny-llama", "--ctx", "64", option, .. value is null ? Array.Empty<string>() : [value]];
        var (rc, stdout, stderr) = KvaqProcess.Run(args);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal($"kvaq: error: {option} does not apply to --attention (attention alone: no prompt, no decode of tokens, no llama.cpp, no GPU)", stderr.Trim());
    }

    [Theory]
    [InlineData("kvaq: error: --attention times the CPU attention kernels; it cannot be combined with --device cuda", "--shape", "tiny-llama", "--device", "cuda")]
    [InlineData("kvaq: error: --ctx '0': '0' is not a positive integer", "--shape", "tiny-llama", "--ctx", "0")]
    [InlineData("kvaq: error: --ctx 600 exceeds the context length 512 of the tiny-llama shape", "--shape", "tiny-llama", "--ctx", "64,600")]
    [InlineData("kvaq: error: --runs must be at least 1, got 0", "--shape", "tiny-llama", "--runs", "0")]
    [InlineData("kvaq: error: --shape 'llama-9b': unknown shape; known shapes: llama-3.2-1b, llama-3.1-8b, qwen2.5-0.5b, tiny-llama, tiny-qwen2, tiny-llama-256, tiny-llama-64", "--shape", "llama-9b")]
    [InlineData("kvaq: error: --ctx 32768 exceeds the context length 512 of the tiny-llama shape", "--shape", "tiny-llama")] // the default context
    [InlineData("kvaq: error: --kv 'k4v2' and --kv-plan p.json are exclusive: give one", "--shape", "tiny-llama", "--ctx", "64", "--kv", "k4v2", "--kv-plan", "p.json")]
    [InlineData("kvaq: error: --kv 'k7v2': K bits '7' is not one of 1, 1.58, 2, 3, 4, 5, 6, 8, fp16 (16) or fp32 (32)", "--shape", "tiny-llama", "--ctx", "64", "--kv", "k7v2")]
    public void BadInputIsOneErrorLine(string expected, params string[] options)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run(["bench", "--attention", .. options]);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal(expected, stderr.Trim());
    }

    [Fact]
    public void ShapeAndModelConflictsAndUnresolvableModelsAreNamed()
    {
        var (rc, _, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama", "--model", Fixtures.Stories260K, "--ctx", "64");
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --model {Fixtures.Stories260K} and --shape 'tiny-llama' are exclusive: give one (--shape takes a preset's attention shape, --model a model file's)", stderr.Trim());

        (rc, _, stderr) = KvaqProcess.Run("bench", "--attention", "--model", "no-such-model-anywhere", "--ctx", "64");
        Assert.Equal(1, rc);
        Assert.StartsWith("kvaq: error: model 'no-such-model-anywhere' not found", stderr.Trim());

        // --shape belongs to --attention.
        (rc, _, stderr) = KvaqProcess.Run("bench", "--shape", "tiny-llama", "--model", Fixtures.Stories260K);
        Assert.Equal(1, rc);
        Assert.Equal("kvaq: error: --shape 'tiny-llama' applies to --attention only (the end-to-end bench runs a model file: --model F)", stderr.Trim());

        // A model's own context length bounds --ctx.
        int max = LoadConfig(Fixtures.Stories260K).ContextLength;
        (rc, _, stderr) = KvaqProcess.Run("bench", "--attention", "--model", Fixtures.Stories260K, "--ctx", $"{max + 1}");
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --ctx {max + 1} exceeds the context length {max} of {Fixtures.Stories260K}", stderr.Trim());
    }

    [Fact]
    public void CachesAndPlansThatDoNotFitAreNamed()
    {
        // Int8 attention reads quantized keys: an FP16 cache is refused naming the flag.
        var (rc, _, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama-64", "--kv", "fp16", "--ctx", "64", "--attn-int8");
        Assert.Equal(1, rc);
        Assert.StartsWith("kvaq: error: --attn-int8: the int8 attention path reads quantized keys", stderr.Trim());

        // A plan of 3 layers for a 2-layer shape.
        using var dir = new TempDir();
        var plan = dir.File("three.json");
        File.WriteAllText(plan, """{"layers": [{"k": {"bits": 4}, "v": {"bits": 2}}, {"k": {"bits": 4}, "v": {"bits": 2}}, {"k": {"bits": 4}, "v": {"bits": 2}}]}""");
        (rc, _, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "tiny-llama-64", "--kv-plan", plan, "--ctx", "64");
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --kv-plan {plan}: layers has 3 entries but the model has 2 layers", stderr.Trim());
    }

    // GB/s, the triad's and the share follow from the reported bytes and medians; the minimum is at most the median; the
    // per-thread figures divide by the thread count, and with one thread the one-thread triad is the triad.
    private static void AssertConsistent(JsonElement c, int runs = 1, int threads = 2)
    {
        double bytes = c.GetProperty("attention.bytes_per_step").GetDouble();
        double step = c.GetProperty("attention.step_seconds").GetDouble();
        double min = c.GetProperty("attention.min_step_seconds").GetDouble();
        double gb = c.GetProperty("attention.gb_per_second").GetDouble();
        double triadGb = c.GetProperty("triad.gb_per_second").GetDouble();
        Assert.True(step > 0 && min > 0 && min <= step, $"step {step}, min {min}");
        Assert.Equal(bytes / step / 1e9, gb, (bytes / step / 1e9 * 1e-3) + 1e-4);
        Assert.Equal(12L << 25, c.GetProperty("triad.bytes").GetInt64());
        Assert.Equal(c.GetProperty("triad.bytes").GetInt64() / c.GetProperty("triad.seconds").GetDouble() / 1e9, triadGb, (triadGb * 1e-3) + 1e-4);
        Assert.Equal(gb / triadGb, c.GetProperty("attention.triad_share").GetDouble(), (gb / triadGb * 1e-3) + 1e-4);
        Assert.True(c.GetProperty("attention.steps").GetInt32() >= 32);
        Assert.Equal(3 * runs, c.GetProperty("triad.runs").GetInt32());
        double oneGb = c.GetProperty("triad.one_thread_gb_per_second").GetDouble();
        Assert.True(oneGb > 0, $"one-thread triad {oneGb}");
        if (threads == 1)
        {
            Assert.Equal(triadGb, oneGb, 1e-4);
        }

        Assert.Equal(gb / threads, c.GetProperty("attention.gb_per_second_per_thread").GetDouble(), (gb / threads * 1e-3) + 1e-4);
        Assert.Equal(gb / threads / oneGb, c.GetProperty("attention.per_thread_share_of_one_thread_triad").GetDouble(), (gb / threads / oneGb * 1e-3) + 1e-4);
    }

    private static KvAdaQuant.Model.ModelConfig LoadConfig(string path)
    {
        using var m = ModelLoader.Load(path);
        return m.Config;
    }
}
