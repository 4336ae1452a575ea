using BenchmarkDotNet.Running;

namespace KvAdaQuant.Bench;

/// <summary>
/// Runs the micro-benchmarks: <c>dotnet run -c Release --project bench/KvAdaQuant.Bench -- --filter '*'</c>, or
/// <see cref="AttentionMinProbe"/> with <c>--attention-min-probe KV</c>.
/// </summary>
public static class Program
{
    public static void Main(string[] args)
    {
        if (args.Length == 2 && args[0] == "--attention-min-probe")
        {
            AttentionMinProbe.Run(args[1]);
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
