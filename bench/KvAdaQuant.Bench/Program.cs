using BenchmarkDotNet.Running;

namespace KvAdaQuant.Bench;

/// <summary>Runs the micro-benchmarks: <c>dotnet run -c Release --project bench/KvAdaQuant.Bench -- --filter '*'</c>.</summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
