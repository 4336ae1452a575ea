using BenchmarkDotNet.Running;

namespace KvAdaQuant.Bench;

/// <summary>
/// Runs the micro-benchmarks: <c>dotnet run -c Release --project bench/KvAdaQuant.Bench -- --filter '*'</c>, or
/// <see cref="AttentionMinProbe"/> with <c>--attention-min-probe KV [CONTEXT] [--resident]</c>.
/// </summary>
public static class Program
{
    public static void Main(string[] args)
    {
        if (args.Length >= 2 && args[0] == "--attention-min-probe")
        {
            int context = args.Length >= 3 && int.TryParse(args[2], out int c) && c > 0 ? c : 32768;
            AttentionMinProbe.Run(args[1], context, resident: args.Contains("--resident"));
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
