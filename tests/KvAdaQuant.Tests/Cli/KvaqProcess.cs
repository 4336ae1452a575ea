using System.Diagnostics;

namespace KvAdaQuant.Tests.Cli;

/// <summary>Runs the real kvaq executable (the kvaq.dll next to the tests) and captures its exit code and output.</summary>
internal static class KvaqProcess
{
    public static (int Rc, string Stdout, string Stderr) Run(params string[] args) => RunWithInput(null, args);

    /// <summary>Runs kvaq with <paramref name="environment"/> added to (or replacing entries of) the test's environment.</summary>
    public static (int Rc, string Stdout, string Stderr) RunWithEnvironment(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        RunCore(null, environment, args);

    /// <summary>Runs kvaq with <paramref name="stdin"/> written to its standard input (then closed); null leaves it the test's.</summary>
    public static (int Rc, string Stdout, string Stderr) RunWithInput(string? stdin, params string[] args) => RunCore(stdin, null, args);

    private static (int Rc, string Stdout, string Stderr) RunCore(string? stdin, IReadOnlyDictionary<string, string>? environment, string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "kvaq.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = stdin is not null };
        psi.ArgumentList.Add(dll);
        if (environment is not null)
        {
            foreach (var (name, value) in environment)
            {
                psi.Environment[name] = value;
            }
        }

        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        if (stdin is not null)
        {
            p.StandardInput.Write(stdin);
            p.StandardInput.Close();
        }

        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr);
    }

    /// <summary>
    /// Whether this process ignores SIGINT (a test run started in the background without job control): kvaq, started from
    /// here, inherits that, so Ctrl+C could not reach it either. Read from /proc (Linux only).
    /// </summary>
    public static bool SigintIgnored()
    {
        var ignored = File.ReadLines("/proc/self/status").Single(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        ulong mask = ulong.Parse(ignored["SigIgn:".Length..].Trim(), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
        return (mask & 2) != 0;
    }
}
