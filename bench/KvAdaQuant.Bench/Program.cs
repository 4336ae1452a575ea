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
        if (args.Length >= 1 && args[0] == "--attention-min-probe")
        {
            MinProbeArguments probe;
            try
            {
                probe = MinProbeArguments.Parse(args[1..]);
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine(e.Message);
                Environment.Exit(2);
                return;
            }

            AttentionMinProbe.Run(probe.Kv, probe.Context, probe.Resident, probe.Threads);
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
