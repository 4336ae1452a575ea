using System.Reflection;
using KvAdaQuant.GpuTestRunner;

// Usage: KvAdaQuant.GpuTestRunner [--filter TEXT]... [--serial]
// Runs the KvAdaQuant.Tests cases whose "Namespace.Class.Method" contains any TEXT (default "KvAdaQuant.Tests.Gpu."),
// one result line per test; exit code 0 when none failed, 1 when any failed, 2 on bad arguments.
var filters = new List<string>();
bool serial = false;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--filter" when i + 1 < args.Length:
            filters.Add(args[++i]);
            break;
        case "--serial":
            serial = true;
            break;
        default:
            Console.Error.WriteLine($"KvAdaQuant.GpuTestRunner: unknown or incomplete option '{args[i]}' (use --filter TEXT, --serial)");
            return 2;
    }
}

if (filters.Count == 0)
{
    filters.Add("KvAdaQuant.Tests.Gpu.");
}

Assembly tests = typeof(KvAdaQuant.Tests.Fixtures).Assembly;
var run = new InProcessTestRun(tests, Console.Out);
TestRunSummary summary = run.Run(filters, serial);
Console.WriteLine($"total {summary.Total}, passed {summary.Passed}, failed {summary.Failed}, skipped {summary.Skipped}, {summary.Seconds:F1} s");
return summary.Failed == 0 && summary.Total > 0 ? 0 : 1;
