using KvAdaQuant.Cli.Commands;

namespace KvAdaQuant.Tests.Cli;

/// <summary>How <c>CliRunner</c> reports failures: one line on stderr, exit code 1. Runs alone: it redirects the process's stderr.</summary>
[Collection(NonParallelCollection.Name)]
public class CliRunnerTests
{
    [Fact]
    public void UnexpectedExceptionIsOneLineNamingItsTypeWithAHint()
    {
        var (rc, stderr) = Run(() => throw new InvalidOperationException("boom"));
        Assert.Equal(1, rc);
        Assert.StartsWith("kvaq: error: unexpected InvalidOperationException: boom (a bug in kvaq", stderr);
        Assert.Contains($"{CliRunner.StackTraceVariable}=1 prints the stack trace", stderr);
        if (Environment.GetEnvironmentVariable(CliRunner.StackTraceVariable) != "1")
        {
            Assert.DoesNotContain('\n', stderr.TrimEnd());
        }
    }

    [Fact]
    public void ArgumentMessagesLoseWhatDotNetAppendsForDevelopers()
    {
        Assert.Equal("kvaq: error: --temperature must be >= 0, got -1", Run(() => throw new ArgumentOutOfRangeException("temperature", "--temperature must be >= 0, got -1")).Stderr.TrimEnd());
        Assert.Equal("kvaq: error: threads must be at least 1, got 0", Run(() => throw new ArgumentOutOfRangeException("threads", 0, "threads must be at least 1")).Stderr.TrimEnd());
        Assert.Equal("kvaq: error: --ctx must be at least 4", Run(() => throw new ArgumentException("--ctx must be at least 4", "ctx")).Stderr.TrimEnd());
        Assert.Equal("kvaq: error: --kv 'x': bad", Run(() => throw new ArgumentException("--kv 'x': bad")).Stderr.TrimEnd());
    }

    private static (int Rc, string Stderr) Run(Func<int> body)
    {
        var old = Console.Error;
        using var e = new StringWriter();
        Console.SetError(e);
        try
        {
            int rc = CliRunner.Run(body);
            return (rc, e.ToString());
        }
        finally
        {
            Console.SetError(old);
        }
    }
}
