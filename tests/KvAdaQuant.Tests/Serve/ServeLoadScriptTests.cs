using System.Diagnostics;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>bench/serve_load.py</c>, the load generator behind the README's serve figures, against a real <c>kvaq serve</c>:
/// it streams every request to its end and prints what it measured (skipped where no <c>python3</c> is on the PATH).
/// </summary>
public class ServeLoadScriptTests
{
    [SkippableFact]
    public void The_load_generator_streams_every_request_and_reports_it()
    {
        string? python = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator)
            .Select(dir => Path.Combine(dir, "python3")).FirstOrDefault(File.Exists);
        Skip.If(python is null, "python3 is not on the PATH");
        string script = Path.Combine(RepoRoot(), "bench", "serve_load.py");

        using var server = new ServeProcess("-m", "stories260K", "--ctx", "64", "--threads", "1", "--parallel", "2");
        var start = new ProcessStartInfo(python!, [script, server.Url, "--requests", "2", "--prompt-tokens", "8", "--max-tokens", "4", "--vocab", "512"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var run = Process.Start(start)!;
        var stderr = run.StandardError.ReadToEndAsync();
        string stdout = run.StandardOutput.ReadToEnd();
        Assert.True(run.WaitForExit(120_000), "serve_load.py did not finish in 120 s");
        Assert.True(run.ExitCode == 0, $"exit {run.ExitCode}: {stderr.Result}{stdout}");
        Assert.Matches(@"request 0: sent at [0-9.]+ s, first token after [0-9.]+ s, done after [0-9.]+ s, 4 tokens", stdout);
        Assert.Matches(@"request 1: sent at [0-9.]+ s, first token after [0-9.]+ s, done after [0-9.]+ s, 4 tokens", stdout);
        Assert.Matches(@"2 requests x \(8 prompt \+ up to 4 generated tokens\), stagger 0\.0 s: wall [0-9.]+ s, [0-9.]+ generated tok/s", stdout);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "KvAdaQuant.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException($"no KvAdaQuant.slnx above {AppContext.BaseDirectory}");
    }
}
