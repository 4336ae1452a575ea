using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// A quantized plan whose residual window, sinks or per-channel chunk cover the whole context never quantizes anything:
/// <see cref="KvPlan.NeverQuantized"/> says so, and generate, chat, perplexity, eval, bench and compare print it as a note.
/// </summary>
public class NeverQuantizedNoteTests
{
    [Theory]
    [InlineData("k4v2", 256, null)]
    [InlineData("fp16", 8, null)]
    [InlineData("k4v2:r64", 65, null)]
    [InlineData("k4v2:r64", 64, "layer 0 K (4:gauto:pt:asym:r64:sink0) keeps 0 sink and 64 residual positions in FP16: none of the context's 64 positions is ever quantized there")]
    [InlineData("k4v2:r32:sink32", 64, "layer 0 K (4:gauto:pt:asym:r32:sink32) keeps 32 sink and 32 residual positions in FP16: none of the context's 64 positions is ever quantized there")]
    [InlineData("k4v2:pc:g64", 63, "layer 0 K (4:g64:pc:asym:r0:sink0) keeps 0 sink and 0 residual positions in FP16 plus a per-channel chunk of 64 tokens: none of the context's 63 positions is ever quantized there")]
    [InlineData("k4v2:pc:g64", 64, null)]
    public void A_plan_that_never_quantizes_in_the_context_is_named(string kv, int capacity, string? expected) =>
        Assert.Equal(expected, KvPlan.Parse(kv, 3).NeverQuantized(capacity));

    [Fact]
    public void Generate_chat_and_perplexity_print_the_note_and_run()
    {
        const string Note = "kvaq: note: k4v2:r512: layer 0 K (4:gauto:pt:asym:r512:sink0) keeps 0 sink and 512 residual positions in FP16: none of the context's 256 positions is ever quantized there";
        var (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "4", "--kv", "k4v2:r512", "--ctx", "256");
        Assert.True(rc == 0, stderr);
        Assert.Contains(Note, stderr);
        (rc, _, stderr) = KvaqProcess.RunWithInput("Once\n", "chat", "-m", "stories260K", "-n", "4", "--kv", "k4v2:r512", "--ctx", "256");
        Assert.True(rc == 0, stderr);
        Assert.Contains(Note, stderr);
        (rc, _, stderr) = KvaqProcess.Run("perplexity", "-m", "stories260K", "--data", "wikitext-2/wiki.test.raw", "--chars", "3000", "--ctx", "256", "--kv", "k4v2:r512", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Contains(Note, stderr);
        (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "4", "--kv", "k4v2:r64", "--ctx", "256");
        Assert.True(rc == 0, stderr);
        Assert.DoesNotContain("kvaq: note:", stderr);
    }

    [Fact]
    public void Eval_bench_and_compare_print_the_note_and_run()
    {
        string Note(int ctx) => $"kvaq: note: k4v2:r512: layer 0 K (4:gauto:pt:asym:r512:sink0) keeps 0 sink and 512 residual positions in FP16: none of the context's {ctx} positions is ever quantized there";
        var (rc, _, stderr) = KvaqProcess.Run("eval", "-m", "stories260K", "--task", "perplexity", "--data", "wikitext-2/wiki.test.raw", "--limit", "1", "--ctx", "128", "--kv", "k4v2:r512", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Contains(Note(128), stderr);
        (rc, _, stderr) = KvaqProcess.Run("compare", "-m", "stories260K", "--data", "wikitext-2/wiki.test.raw", "--chars", "2000", "--ctx", "128", "--kv", "fp32,k4v2:r512", "--vs-cache", "", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Contains(Note(128), stderr);
        // bench over several lengths: once, for the longest the plan never quantizes (not 256, which it does).
        (rc, _, stderr) = KvaqProcess.Run("bench", "-m", "stories260K", "--ctx", "64,128,256", "--kv", "k4v2:r200", "--runs", "1", "--decode-tokens", "2", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Contains("kvaq: note: k4v2:r200: layer 0 K (4:gauto:pt:asym:r200:sink0) keeps 0 sink and 200 residual positions in FP16: none of the context's 128 positions is ever quantized there", stderr);
        Assert.Single(stderr.Split('\n'), l => l.StartsWith("kvaq: note:", StringComparison.Ordinal));
        (rc, _, stderr) = KvaqProcess.Run("bench", "--attention", "--shape", "llama-3.2-1b", "--ctx", "256", "--kv", "k4v2:r512", "--runs", "1", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Contains(Note(256), stderr);
    }
}
