using System.Text.Json;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary><c>kvaq bench</c> and <c>kvaq compare</c> end to end on a tiny synthetic GGUF (console output is captured, so these run alone).</summary>
[Collection(NonParallelCollection.Name)]
public class BenchCommandTests
{
    [LlamaCppFact]
    public void Bench_VsLlamaCpp_Json_HasIssueKeysAndConsistentRatios()
    {
        using var dir = new TempDir();
        var gguf = dir.File("tiny-llama.gguf");
        SyntheticModelWriter.Create(SyntheticModelPreset.Find("tiny-llama"), GgmlType.F32, seed: 3).Write(gguf, threads: 1);
        var (code, stdout, stderr) = Run(["bench", "--model", gguf, "--ctx", "48,64", "--decode-tokens", "8", "--runs", "1", "--threads", "1", "--vs", "llama.cpp", "--json"]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("f16/f16", doc.RootElement.GetProperty("llama_cpp.cache").GetString());
        Assert.Equal(50, doc.RootElement.GetProperty("settle_ms").GetInt32());
        Assert.True(doc.RootElement.GetProperty("peak_rss_bytes").GetInt64() >= doc.RootElement.GetProperty("kvaq.peak_rss_bytes").GetInt64());
        var contexts = doc.RootElement.GetProperty("contexts").EnumerateArray().ToArray();
        Assert.Equal([48, 64], contexts.Select(c => c.GetProperty("ctx").GetInt32()));
        foreach (var c in contexts)
        {
            foreach (var phase in new[] { "decode", "prefill" })
            {
                double ours = c.GetProperty($"kvaq.{phase}_tokens_per_second").GetDouble();
                double theirs = c.GetProperty($"llama_cpp.{phase}_tokens_per_second").GetDouble();
                Assert.True(ours > 0 && theirs > 0, $"{phase}: {ours} / {theirs}");
                Assert.Equal(ours / theirs, c.GetProperty($"{phase}_ratio").GetDouble(), 0.01 * ours / theirs);
            }

            // tiny-llama: 2 layers x 2 KV heads x head size 16, K and V, 2 bytes each in FP16.
            int ctx = c.GetProperty("ctx").GetInt32();
            Assert.Equal(ctx - 8, c.GetProperty("prefill_tokens").GetInt32());
            Assert.Equal(2L * 2 * 16 * 2 * 2 * ctx, c.GetProperty("kvaq.kv_bytes").GetInt64());
            Assert.True(c.GetProperty("llama_cpp.kv_bytes").GetInt64() >= 2L * 2 * 16 * 2 * 2 * ctx);
        }
    }

    [LlamaCppFact]
    public void Bench_Batch_VsLlamaCpp_RunsAsManySequencesInBoth()
    {
        using var dir = new TempDir();
        var gguf = dir.File("tiny-llama.gguf");
        SyntheticModelWriter.Create(SyntheticModelPreset.Find("tiny-llama"), GgmlType.Q8_0, seed: 3).Write(gguf, threads: 1);
        var (code, stdout, stderr) = Run(["bench", "--model", gguf, "--ctx", "48", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--vs", "llama.cpp", "--batch", "3", "--json"]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var c = doc.RootElement.GetProperty("contexts")[0];
        Assert.Equal(3, c.GetProperty("kvaq.sequences").GetInt32());
        Assert.Equal(3, c.GetProperty("llama_cpp.sequences").GetInt32());
        double ours = c.GetProperty("kvaq.decode_tokens_per_second").GetDouble();
        double theirs = c.GetProperty("llama_cpp.decode_tokens_per_second").GetDouble();
        Assert.Equal(ours / theirs, c.GetProperty("decode_ratio").GetDouble(), 0.01 * ours / theirs);
        Assert.Equal(theirs / 3, c.GetProperty("llama_cpp.decode_tokens_per_second_per_sequence").GetDouble(), 0.01 * theirs);

        // Three FP16 caches of 48 positions (tiny-llama: 2 layers x 2 KV heads x head size 16, K and V); llama.cpp holds
        // at least as much.
        Assert.Equal(3L * 2 * 2 * 16 * 2 * 2 * 48, c.GetProperty("kvaq.kv_bytes").GetInt64());
        Assert.True(c.GetProperty("llama_cpp.kv_bytes").GetInt64() >= 3L * 2 * 2 * 16 * 2 * 2 * 48);
    }

    [Fact]
    public void Bench_Json_ReportsThePrefillBatch()
    {
        var (code, stdout, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--json"]);
        Assert.True(code == 0, stderr);
        Assert.Equal(512, JsonDocument.Parse(stdout).RootElement.GetProperty("kvaq.ubatch").GetInt32());
        (code, stdout, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--kv", "k4v2:r8", "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--json"]);
        Assert.True(code == 0, stderr);
        Assert.Equal(64, JsonDocument.Parse(stdout).RootElement.GetProperty("kvaq.ubatch").GetInt32());
        (code, stdout, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ubatch", "5", "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--json"]);
        Assert.True(code == 0, stderr);
        Assert.Equal(5, JsonDocument.Parse(stdout).RootElement.GetProperty("kvaq.ubatch").GetInt32());
        (code, stdout, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ubatch", "5", "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--threads", "1"]);
        Assert.True(code == 0, stderr);
        Assert.StartsWith("threads 1; kvaq prefill 5 tokens a pass; medians;", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Bench_Batch_DecodesSeveralSequencesAndCountsThemAll()
    {
        var (code, stdout, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--kv", "k4v2", "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--batch", "3", "--json"]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(3, doc.RootElement.GetProperty("batch").GetInt32());
        var c = doc.RootElement.GetProperty("contexts")[0];
        Assert.Equal(3, c.GetProperty("kvaq.sequences").GetInt32());
        double total = c.GetProperty("kvaq.decode_tokens_per_second").GetDouble();
        Assert.Equal(total / 3, c.GetProperty("kvaq.decode_tokens_per_second_per_sequence").GetDouble(), 0.01 * total);

        // Three caches of the one-sequence run's bytes.
        (code, stdout, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--kv", "k4v2", "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--json"]);
        Assert.True(code == 0, stderr);
        using var one = JsonDocument.Parse(stdout);
        Assert.Equal(1, one.RootElement.GetProperty("batch").GetInt32());
        var c1 = one.RootElement.GetProperty("contexts")[0];
        Assert.False(c1.TryGetProperty("kvaq.sequences", out _));
        Assert.Equal(3 * c1.GetProperty("kvaq.kv_bytes").GetInt64(), c.GetProperty("kvaq.kv_bytes").GetInt64());

        (code, stdout, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--batch", "2"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("; 2 sequences decoded together, tokens/s of all of them;", stdout);
        Assert.Contains("kvaq: 2 x depth 36,", stderr);
    }

    [Fact]
    public void Bench_VsLlamaCppOnLlama2cFile_SaysItNeedsGguf()
    {
        var (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--vs", "llama.cpp"]);
        Assert.Equal(1, code);
        Assert.Contains(Fixtures.Stories260K, stderr);
        Assert.Contains("not a GGUF file", stderr);
    }

    [Fact]
    public void Bench_BadOptions_AreNamed()
    {
        var (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--vs", "vllm"]);
        Assert.Equal(1, code);
        Assert.Contains("--vs 'vllm'", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ctx", "128,x"]);
        Assert.Equal(1, code);
        Assert.Contains("--ctx '128,x'", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ctx", "16", "--decode-tokens", "32"]);
        Assert.Equal(1, code);
        Assert.Contains("--ctx 16 must exceed --runs x --decode-tokens = 96", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--prefill-runs", "0"]);
        Assert.Equal(1, code);
        Assert.Contains("--prefill-runs must be at least 1, got 0", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--ubatch", "-3"]);
        Assert.Equal(1, code);
        Assert.Contains("--ubatch must be at least 1, got -3", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--device", "cuda", "--ubatch", "0", "--ctx", "40", "--runs", "1", "--decode-tokens", "4"]);
        Assert.Equal(1, code);
        Assert.Contains("--ubatch must be at least 1, got 0", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--batch", "0"]);
        Assert.Equal(1, code);
        Assert.Contains("--batch must be >= 1, got 0", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--prefill-tokens", "64"]);
        Assert.Equal(1, code);
        Assert.Contains("--prefill-tokens applies to --device cuda only", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--device", "cuda", "--prefill-tokens", "0", "--ctx", "40", "--runs", "1", "--decode-tokens", "4"]);
        Assert.Equal(1, code);
        Assert.Contains("--prefill-tokens must be at least 1, got 0", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--prefill-gemm", "fma"]);
        Assert.Equal(1, code);
        Assert.Contains("--prefill-gemm applies to --device cuda only", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--device", "cuda", "--prefill-gemm", "wmma", "--ctx", "40", "--runs", "1", "--decode-tokens", "4"]);
        Assert.Equal(1, code);
        Assert.Contains("--prefill-gemm: expected tensor-cores, fma or auto, got 'wmma'", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--prefill-attention", "fma"]);
        Assert.Equal(1, code);
        Assert.Contains("--prefill-attention applies to --device cuda only", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--device", "cuda", "--prefill-attention", "flash", "--ctx", "40", "--runs", "1", "--decode-tokens", "4"]);
        Assert.Equal(1, code);
        Assert.Contains("--prefill-attention: expected tensor-cores, fma or auto, got 'flash'", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--fit"]);
        Assert.Equal(1, code);
        Assert.Contains("--fit applies to --device cuda only", stderr);
        (code, _, stderr) = Run(["bench", "--model", Fixtures.Stories260K, "--settle-ms", "-1"]);
        Assert.Equal(1, code);
        Assert.Contains("--settle-ms must be 0-60000 milliseconds, got -1", stderr);
        (code, _, stderr) = Run(["bench", "--attention", "--shape", "tiny-llama", "--settle-ms", "10"]);
        Assert.Equal(1, code);
        Assert.Contains("--settle-ms does not apply to --attention", stderr);
    }

    [LlamaCppFact]
    public void Bench_KvPlan_RunsThePlanAndPicksLlamaCppTypesFromIt()
    {
        using var dir = new TempDir();
        var gguf = dir.File("stories3M-q8_0.gguf");
        Assert.Equal(0, Run(["convert", "--model", Fixtures.Stories3M, "--type", "q8_0", "--out", gguf]).Code);
        var plan = WritePlan(dir, 6, _ => 8, 4);
        var (code, stdout, stderr) = Run(["bench", "--model", gguf, "--kv-plan", plan, "--ctx", "48", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--vs", "llama.cpp", "--json"]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("q8_0/q4_0", doc.RootElement.GetProperty("llama_cpp.cache").GetString());
        Assert.Equal(plan, doc.RootElement.GetProperty("kv_plan").GetString());
        long planBytes = doc.RootElement.GetProperty("contexts")[0].GetProperty("kvaq.kv_bytes").GetInt64();

        // The plan is K8V4 in every layer: kvaq's cache is the one --kv k8v4 makes.
        (code, stdout, stderr) = Run(["bench", "--model", gguf, "--kv", "k8v4", "--ctx", "48", "--decode-tokens", "4", "--runs", "1", "--threads", "1", "--json"]);
        Assert.True(code == 0, stderr);
        using var same = JsonDocument.Parse(stdout);
        Assert.Equal(same.RootElement.GetProperty("contexts")[0].GetProperty("kvaq.kv_bytes").GetInt64(), planBytes);
        Assert.NotEqual(2L * 6 * 2 * 32 * 2 * 48, planBytes);
    }

    [Fact]
    public void Bench_KvPlan_ErrorsNameTheOption()
    {
        using var dir = new TempDir();
        var gguf = dir.File("stories260K.gguf");
        Assert.Equal(0, Run(["convert", "--model", Fixtures.Stories260K, "--type", "f32", "--out", gguf]).Code);
        var mixed = WritePlan(dir, 5, l => l < 2 ? 8 : 4, 2);

        // llama.cpp has one cache type for every layer: a plan mixing 8- and 4-bit keys has no closest type.
        var (code, _, stderr) = Run(["bench", "--model", gguf, "--kv-plan", mixed, "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--vs", "llama.cpp"]);
        Assert.Equal(1, code);
        Assert.Equal($"kvaq: error: --kv-plan {mixed}: its K layers map to different llama.cpp cache types (q8_0, q4_0), and llama.cpp stores every layer in one type; pass --vs-cache TYPE or K/V", stderr.Trim());

        (code, _, stderr) = Run(["bench", "--model", gguf, "--kv-plan", mixed, "--kv", "k4v4", "--ctx", "40", "--decode-tokens", "4", "--runs", "1"]);
        Assert.Equal(1, code);
        Assert.Contains("are exclusive", stderr);

        // stories260K's heads are 8 wide: the q4_0 that --kv k4v2 maps to cannot hold them; the error names --kv, not an internal parameter.
        (code, _, stderr) = Run(["bench", "--model", gguf, "--kv", "k4v2", "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--vs", "llama.cpp"]);
        Assert.Equal(1, code);
        Assert.Equal($"kvaq: error: --kv 'k4v2': llama.cpp's closest K cache type is q4_0, whose blocks of 32 values do not divide the head size 8 of {gguf}; pass --vs-cache f16 or f32", stderr.Trim());
        (code, _, stderr) = Run(["bench", "--model", gguf, "--vs-cache", "f16/q8_0", "--ctx", "40", "--decode-tokens", "4", "--runs", "1", "--vs", "llama.cpp"]);
        Assert.Equal(1, code);
        Assert.Equal($"kvaq: error: --vs-cache 'f16/q8_0': llama.cpp's q8_0 packs blocks of 32 values, which do not divide the head size 8 of {gguf}", stderr.Trim());
    }

    [LlamaCppFact]
    public void Compare_TinyModel_Fp32AndLlamaCppF32Agree()
    {
        using var dir = new TempDir();
        var gguf = dir.File("stories260K.gguf");
        Assert.Equal(0, Run(["convert", "--model", Fixtures.Stories260K, "--type", "f32", "--out", gguf]).Code);
        var (code, stdout, stderr) = Run(["compare", "--model", gguf, "--data", Fixtures.Path("data", "wikitext-2", "wiki.test.raw"), "--chars", "3000", "--ctx", "128", "--kv", "fp32", "--vs-cache", "f32", "--threads", "1", "--json"]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        Assert.Equal(2, rows.Length);
        double ours = rows[0].GetProperty("perplexity").GetDouble();
        double theirs = rows[1].GetProperty("perplexity").GetDouble();
        Assert.Equal("f32/f32", rows[1].GetProperty("cache").GetString());
        Assert.True(Math.Abs(ours - theirs) <= 1e-3 * theirs, $"kvaq fp32 {ours} vs llama.cpp f32 {theirs}");

        // The +/- of both rows: the same tokens' NLL spread, so equal to about the same relative precision.
        double ourSe = rows[0].GetProperty("perplexity_uncertainty").GetDouble();
        double theirSe = rows[1].GetProperty("perplexity_uncertainty").GetDouble();
        Assert.InRange(ourSe, 0.001 * ours, 0.5 * ours);
        Assert.True(Math.Abs(ourSe - theirSe) <= 1e-2 * theirSe, $"kvaq +/- {ourSe} vs llama.cpp +/- {theirSe}");

        // stories260K's heads are 8 wide: llama.cpp's 32-value cache blocks cannot hold them, and the error says so.
        (code, _, stderr) = Run(["compare", "--model", gguf, "--data", Fixtures.Path("data", "wikitext-2", "wiki.test.raw"), "--chars", "3000", "--ctx", "128", "--kv", "", "--vs-cache", "q8_0", "--threads", "1"]);
        Assert.Equal(1, code);
        Assert.Contains("type_k q8_0 packs blocks of 32 values, which do not divide the head size 8", stderr);
        Assert.Contains(gguf, stderr);
    }

    private static string WritePlan(TempDir dir, int layers, Func<int, int> keyBits, int valueBits)
    {
        var path = dir.File($"plan-{Guid.NewGuid():N}.json");
        var rows = Enumerable.Range(0, layers).Select(l => $"{{\"k\": {{\"bits\": {keyBits(l)}}}, \"v\": {{\"bits\": {valueBits}}}}}");
        File.WriteAllText(path, $"{{\"name\": \"test-plan\", \"layers\": [{string.Join(", ", rows)}]}}");
        return path;
    }

    private static (int Code, string Stdout, string Stderr) Run(string[] args)
    {
        var oldOut = Console.Out;
        var oldErr = Console.Error;
        using var o = new StringWriter();
        using var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int code = KvAdaQuant.Cli.Program.Main(args);
            return (code, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }
}
