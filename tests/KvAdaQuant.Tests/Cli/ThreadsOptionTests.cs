namespace KvAdaQuant.Tests.Cli;

/// <summary>--threads out of range is refused by every command that takes it, before any work (the real executable).</summary>
public class ThreadsOptionTests
{
    [Theory]
    [InlineData("generate", "-1")]
    [InlineData("generate", "100000")]
    [InlineData("perplexity", "1025")]
    [InlineData("convert", "-3")]
    [InlineData("bench", "100000")]
    [InlineData("compare", "-2")]
    [InlineData("eval", "5000")]
    [InlineData("analyze", "-1")]
    public void OutOfRangeThreadsFailWithAMessageNamingTheOption(string command, string threads)
    {
        var (rc, _, stderr) = KvaqProcess.Run(command, "--model", Fixtures.Stories260K, "--threads", threads);
        Assert.NotEqual(0, rc);
        Assert.Contains($"--threads must be 0 (all cores) or 1-1024, got {threads}", stderr);
        Assert.DoesNotContain("Fatal error", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Theory]
    [InlineData("generate", "abc")]
    [InlineData("analyze", "1.5")]
    [InlineData("convert", "")]
    public void NonNumericThreadsAreAParseErrorNotACrash(string command, string threads)
    {
        // The range check used to read the value the parser had failed to convert: an unhandled
        // InvalidOperationException, a stack trace and exit code 134.
        var (rc, stdout, stderr) = KvaqProcess.Run(command, "--model", Fixtures.Stories260K, "--threads", threads);
        Assert.Equal(1, rc);
        Assert.Contains($"kvaq: error: --threads '{threads}' is not an integer (-2147483648 to 2147483647)", stderr);
        Assert.DoesNotContain("Unhandled exception", stderr);
        Assert.DoesNotContain("   at ", stderr);
        Assert.Empty(stdout);
    }

    [Fact]
    public void ACommandLineThatDoesNotParsePrintsItsErrorsWithoutTheHelpText()
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "--threads", "-1", "--bogus");
        Assert.Equal(1, rc);
        Assert.DoesNotContain("Usage:", stdout + stderr);
        Assert.Contains("kvaq: error: --threads must be 0 (all cores) or 1-1024, got -1", stderr);
        Assert.Contains("kvaq: error: Unrecognized command or argument '--bogus'", stderr);
    }
}
