using System.Diagnostics;
using System.Reflection;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace KvAdaQuant.GpuTestRunner;

/// <summary>
/// Discovers the xunit v2 tests of one assembly with xunit's own framework (so [SkippableFact]/[SkippableTheory]
/// and [InlineData] behave as under dotnet test), runs those whose full method name matches a filter, and writes
/// one line per result (with the test's output, and for failures the message and stack trace).
/// </summary>
public sealed class InProcessTestRun(Assembly assembly, TextWriter log) : LongLivedMarshalByRefObject, IMessageSink
{
    private readonly ManualResetEventSlim _discovered = new();
    private readonly ManualResetEventSlim _finished = new();
    private readonly List<ITestCase> _cases = [];
    private readonly Lock _gate = new();
    private int _passed;
    private int _failed;
    private int _skipped;

    public TestRunSummary Run(IReadOnlyList<string> filters, bool serial)
    {
        var stopwatch = Stopwatch.StartNew();
        using var framework = new XunitTestFramework(new NullMessageSink());
        var discoveryOptions = new OptionBag();
        discoveryOptions.SetValue("xunit.discovery.PreEnumerateTheories", true);
        using (ITestFrameworkDiscoverer discoverer = framework.GetDiscoverer(Reflector.Wrap(assembly)))
        {
            discoverer.Find(false, this, discoveryOptions);
            _discovered.Wait();
        }

        var selected = _cases.Where(c => filters.Any(f => FullName(c).Contains(f, StringComparison.Ordinal))).ToList();
        log.WriteLine($"discovered {_cases.Count} test cases, running {selected.Count} matching {string.Join(" | ", filters)}");
        if (selected.Count > 0)
        {
            var executionOptions = new OptionBag();
            executionOptions.SetValue("xunit.execution.DisableParallelization", serial);
            executionOptions.SetValue("xunit.execution.SynchronousMessageReporting", true);
            using ITestFrameworkExecutor executor = framework.GetExecutor(assembly.GetName());
            executor.RunTests(selected, this, executionOptions);
            _finished.Wait();
        }

        return new TestRunSummary(_passed + _failed + _skipped, _passed, _failed, _skipped, stopwatch.Elapsed.TotalSeconds);
    }

    public bool OnMessage(IMessageSinkMessage message)
    {
        lock (_gate)
        {
            switch (message)
            {
                case ITestCaseDiscoveryMessage found:
                    _cases.Add(found.TestCase);
                    break;
                case IDiscoveryCompleteMessage:
                    _discovered.Set();
                    break;
                case ITestPassed passed:
                    _passed++;
                    log.WriteLine($"PASS {passed.Test.DisplayName} ({passed.ExecutionTime:F3} s)");
                    if (!string.IsNullOrEmpty(passed.Output))
                    {
                        log.WriteLine(Indent(passed.Output.TrimEnd()));
                    }

                    break;
                case ITestSkipped skipped:
                    _skipped++;
                    log.WriteLine($"SKIP {skipped.Test.DisplayName}: {skipped.Reason}");
                    break;
                case ITestFailed failed:
                    _failed++;
                    log.WriteLine($"FAIL {failed.Test.DisplayName} ({failed.ExecutionTime:F3} s)");
                    for (int i = 0; i < failed.Messages.Length; i++)
                    {
                        log.WriteLine($"  {failed.ExceptionTypes[i]}: {failed.Messages[i]}");
                        log.WriteLine(Indent(failed.StackTraces[i]));
                    }

                    if (!string.IsNullOrEmpty(failed.Output))
                    {
                        log.WriteLine("  output:");
                        log.WriteLine(Indent(failed.Output.TrimEnd()));
                    }

                    break;
                case IErrorMessage error:
                    _failed++;
                    log.WriteLine($"ERROR {string.Join("; ", error.Messages)}");
                    log.WriteLine(Indent(string.Join("\n", error.StackTraces)));
                    break;
                case ITestAssemblyFinished:
                    _finished.Set();
                    break;
            }

            log.Flush();
        }

        return true;
    }

    private static string FullName(ITestCase testCase) =>
        $"{testCase.TestMethod.TestClass.Class.Name}.{testCase.TestMethod.Method.Name}";

    private static string Indent(string? text) =>
        string.Join('\n', (text ?? string.Empty).Split('\n').Select(line => "    " + line.TrimEnd('\r')));
}
