using System.Text.Json;
using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// <c>kvaq chat --device cuda</c> end to end, in process (the GPU machine has no .NET to start kvaq with; console
/// input and output are swapped, so these run alone). Runs only where libcuda and NVRTC load.
/// </summary>
[Collection(NonParallelCollection.Name)]
public class CudaChatCliTests
{
    [SkippableFact]
    public void ChatOnTheGpuRepliesAsTheCpuWithAnFp16CacheAndRefusesSaveAndLoad()
    {
        SkipWithoutCuda();
        using var tmp = new TempDir();
        string file = Path.Combine(tmp.Path, "chat.state");
        var gpu = Run($"Once upon a time\n/save {file}\n The dog\n/load {file}\n\n", "chat", "--model", Fixtures.Stories260K, "--device", "cuda", "-n", "20", "--ctx", "256", "--json");
        var cpu = Run("Once upon a time\n The dog\n\n", "chat", "--model", Fixtures.Stories260K, "--kv", "fp16", "--threads", "2", "-n", "20", "--ctx", "256", "--json");
        Assert.Equal(0, cpu.Code);
        Assert.Equal(1, gpu.Code);
        Assert.Contains("[cuda: ", gpu.Stderr, StringComparison.Ordinal);
        Assert.Contains("kvaq: error: /save: the KV cache is on the GPU; state files hold CPU caches", gpu.Stderr, StringComparison.Ordinal);
        Assert.Contains("kvaq: error: /load: the KV cache is on the GPU; state files hold CPU caches", gpu.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(file));

        // The three replies (the last an empty message continuing the second) as the CPU engine's with an FP16 cache.
        string[] gpuLines = gpu.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string[] cpuLines = cpu.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, cpuLines.Length);
        Assert.Equal(cpuLines.Length, gpuLines.Length);
        for (int i = 0; i < cpuLines.Length; i++)
        {
            using var g = JsonDocument.Parse(gpuLines[i]);
            using var c = JsonDocument.Parse(cpuLines[i]);
            foreach (string key in new[] { "turn", "reply", "tokens", "prompt_tokens", "stop_reason", "position" })
            {
                Assert.Equal(c.RootElement.GetProperty(key).GetRawText(), g.RootElement.GetProperty(key).GetRawText());
            }
        }
    }

    [SkippableFact]
    public void ChatOnTheGpuWithAGrammarRepliesAsTheCpuWithAnFp16Cache()
    {
        SkipWithoutCuda();
        string[] grammar = ["--grammar", "root ::= (\"Yes\" | \"No\") \".\""];
        var gpu = Run("Is the sky blue?\nIs the sun hot?\n", ["chat", "--model", Fixtures.Stories260K, "--device", "cuda", "-n", "10", "--ctx", "256", "--json", .. grammar]);
        var cpu = Run("Is the sky blue?\nIs the sun hot?\n", ["chat", "--model", Fixtures.Stories260K, "--kv", "fp16", "--threads", "2", "-n", "10", "--ctx", "256", "--json", .. grammar]);
        Assert.Equal(0, cpu.Code);
        Assert.Equal(0, gpu.Code);
        string[] gpuLines = gpu.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string[] cpuLines = cpu.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, cpuLines.Length);
        Assert.Equal(cpuLines.Length, gpuLines.Length);
        for (int i = 0; i < cpuLines.Length; i++)
        {
            using var g = JsonDocument.Parse(gpuLines[i]);
            using var c = JsonDocument.Parse(cpuLines[i]);
            Assert.Contains(g.RootElement.GetProperty("reply").GetString(), new[] { "Yes.", "No." });
            foreach (string key in new[] { "reply", "tokens", "stop_reason" })
            {
                Assert.Equal(c.RootElement.GetProperty(key).GetRawText(), g.RootElement.GetProperty(key).GetRawText());
            }
        }
    }

    [SkippableFact]
    public void GenerateOnTheGpuWithAGrammarGivesTheCpusTextWithAnFp16Cache()
    {
        SkipWithoutCuda();
        string[] grammar = ["--grammar", "root ::= [0-9]{3} \"-\" [a-z]{1,8} \".\""];
        var gpu = Run(string.Empty, ["generate", "--model", Fixtures.Stories260K, "--device", "cuda", "-p", "Once upon a time", "-n", "30", "--ctx", "256", "--json", .. grammar]);
        var cpu = Run(string.Empty, ["generate", "--model", Fixtures.Stories260K, "--kv", "fp16", "--threads", "2", "-p", "Once upon a time", "-n", "30", "--ctx", "256", "--json", .. grammar]);
        Assert.Equal(0, cpu.Code);
        Assert.Equal(0, gpu.Code);
        using var g = JsonDocument.Parse(gpu.Stdout);
        using var c = JsonDocument.Parse(cpu.Stdout);
        Assert.Matches("^[0-9]{3}-[a-z]{1,8}\\.$", g.RootElement.GetProperty("text").GetString()!);
        Assert.True(g.RootElement.GetProperty("grammar_complete").GetBoolean());
        foreach (string key in new[] { "text", "tokens", "stop_reason" })
        {
            Assert.Equal(c.RootElement.GetProperty(key).GetRawText(), g.RootElement.GetProperty(key).GetRawText());
        }
    }

    // The samplers of session 40 make the sampler non-basic, so on the GPU they run on the host through Generator, as
    // min-p and the penalties do: the same tokens as the CPU engine with an FP16 cache, greedy after DRY and sampled.
    [SkippableTheory]
    [InlineData("--dry-multiplier", "0.8", "--temperature", "0")]
    [InlineData("--mirostat", "2", "--temperature", "0.8", "--seed", "7")]
    [InlineData("--mirostat", "1", "--temperature", "0.8", "--seed", "7")]
    [InlineData("--typical", "0.9", "--top-n-sigma", "2", "--temperature", "0.8", "--seed", "11")]
    [InlineData("--xtc-probability", "0.5", "--xtc-threshold", "0.1", "--temperature", "0.8", "--seed", "13")]
    public void GenerateOnTheGpuWithTheNewSamplersGivesTheCpusTokensWithAnFp16Cache(params string[] sampling)
    {
        SkipWithoutCuda();
        var gpu = Run(string.Empty, ["generate", "--model", Fixtures.Stories260K, "--device", "cuda", "-p", "Once upon a time", "-n", "40", "--ctx", "256", "--json", .. sampling]);
        var cpu = Run(string.Empty, ["generate", "--model", Fixtures.Stories260K, "--kv", "fp16", "--threads", "2", "-p", "Once upon a time", "-n", "40", "--ctx", "256", "--json", .. sampling]);
        Assert.Equal(0, cpu.Code);
        Assert.Equal(0, gpu.Code);
        using var g = JsonDocument.Parse(gpu.Stdout);
        using var c = JsonDocument.Parse(cpu.Stdout);
        foreach (string key in new[] { "text", "tokens", "stop_reason" })
        {
            Assert.Equal(c.RootElement.GetProperty(key).GetRawText(), g.RootElement.GetProperty(key).GetRawText());
        }
    }

    [SkippableFact]
    public void ChatOnTheGpuRefusesAnFp32CacheNamingKv()
    {
        SkipWithoutCuda();
        var r = Run("Once upon a time\n", "chat", "--model", Fixtures.Stories260K, "--device", "cuda", "--kv", "fp32", "-n", "4");
        Assert.Equal(1, r.Code);
        Assert.StartsWith("kvaq: error: --kv", r.Stderr.TrimStart(), StringComparison.Ordinal);
        Assert.Contains("is fp32; the GPU cache holds fp16 or packed codes", r.Stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, r.Stdout);
    }

    private static void SkipWithoutCuda()
    {
        bool open = CudaContext.TryOpen(out CudaContext? context, out string reason);
        context?.Dispose();
        Skip.IfNot(open, reason);
        Skip.IfNot(NvrtcCompiler.TryLoad(out _, out string nvrtcReason), nvrtcReason);
    }

    private static (int Code, string Stdout, string Stderr) Run(string stdin, params string[] args)
    {
        var oldIn = Console.In;
        var oldOut = Console.Out;
        var oldErr = Console.Error;
        using var i = new StringReader(stdin);
        using var o = new StringWriter();
        using var e = new StringWriter();
        Console.SetIn(i);
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int code = KvAdaQuant.Cli.Program.Main(args);
            return (code, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetIn(oldIn);
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }
}
