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
            int context = 32768;
            bool resident = false;
            foreach (string a in args.Skip(2))
            {
                if (a == "--resident")
                {
                    resident = true;
                }
                else if (int.TryParse(a, out int c) && c > 0)
                {
                    context = c;
                }
                else
                {
                    Console.Error.WriteLine($"--attention-min-probe: '{a}' is neither a context (a positive whole number of positions) nor --resident");
                    Environment.Exit(2);
                }
            }

            AttentionMinProbe.Run(args[1], context, resident);
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
