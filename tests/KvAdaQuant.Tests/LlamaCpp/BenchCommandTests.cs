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

        // stories260K's heads are 8 wide: llama.cpp's 32-value cache blocks cannot hold them, and the error says so.
        (code, _, stderr) = Run(["compare", "--model", gguf, "--data", Fixtures.Path("data", "wikitext-2", "wiki.test.raw"), "--chars", "3000", "--ctx", "128", "--kv", "", "--vs-cache", "q8_0", "--threads", "1"]);
        Assert.Equal(1, code);
        Assert.Contains("type_k q8_0 packs blocks of 32 values, which do not divide the head size 8", stderr);
        Assert.Contains(gguf, stderr);
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
