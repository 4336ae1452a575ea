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
        Assert.Equal("kvaq: error: --kv and --vs-cache are both empty: nothing to compare", stderr.TrimEnd());
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
}
