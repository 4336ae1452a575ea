using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace KvAdaQuant.Bench;

/// <summary>
/// Adds the Layers, CacheMB, GB/s and %Triad columns to <see cref="AttentionBenchmarks"/> and <see cref="TriadBenchmark"/>.
/// GB/s is bytes over the median time (robust on a shared machine); %Triad divides by the GB/s of the triad with the
/// same thread count (Threads parameter, 1 where absent), found in the same summary when they run together with <c>--join</c>.
/// </summary>
public sealed class AttentionBenchmarkConfig : ManualConfig
{
    /// <summary>Creates the config.</summary>
    public AttentionBenchmarkConfig()
    {
        AddColumn(new CacheColumn(Kind.Layers), new CacheColumn(Kind.Megabytes), new CacheColumn(Kind.Bandwidth), new CacheColumn(Kind.TriadShare));
    }

    private enum Kind
    {
        Layers,
        Megabytes,
        Bandwidth,
        TriadShare,
    }

    private static long? BytesOf(BenchmarkCase c)
    {
        if (c.Descriptor.Type == typeof(TriadBenchmark))
        {
            return TriadBenchmark.Bytes;
        }

        if (!c.Descriptor.Type.IsSubclassOf(typeof(AttentionStepBenchmark)))
        {
            return null; // AttentionPartsBenchmarks: each part reads only some of the step's bytes
        }

        var ps = c.Parameters;
        return ps["Kv"] is string kv && ps["Context"] is int ctx && ps["Shape"] is string shape ? AttentionStepBenchmark.CacheBytes(shape, kv, ctx) : null;
    }

    // The Threads parameter of a case (1 where it has none): attention rows are compared with the triad of the same count.
    private static int ThreadsOf(BenchmarkCase c) =>
        c.Parameters.Items.FirstOrDefault(p => p.Name == "Threads")?.Value is int t ? t : 1;

    private static double? GigabytesPerSecond(Summary summary, BenchmarkCase c)
    {
        var stats = summary[c]?.ResultStatistics;
        return BytesOf(c) is long bytes && stats is not null ? bytes / stats.Median : null;
    }

    private sealed class CacheColumn(Kind kind) : IColumn
    {
        public string Id => kind.ToString();

        public string ColumnName => kind switch
        {
            Kind.Layers => "Layers",
            Kind.Megabytes => "CacheMB",
            Kind.Bandwidth => "GB/s",
            _ => "%Triad",
        };

        public bool AlwaysShow => true;

        public ColumnCategory Category => ColumnCategory.Custom;

        public int PriorityInCategory => (int)kind;

        public bool IsNumeric => true;

        public UnitType UnitType => UnitType.Dimensionless;

        public string Legend => kind switch
        {
            Kind.Layers => "filled layers the steps cycle through (working set = Layers x CacheMB)",
            Kind.Megabytes => "bytes of K and V read per step (packed codes + FP16 scales/zeros; triad: 12 bytes per element), in 1e6 bytes",
            Kind.Bandwidth => "bytes read per step / median time, in 1e9 bytes per second",
            _ => "GB/s as a percentage of the GB/s of the triad with the same Threads in the same summary",
        };

        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

        public bool IsAvailable(Summary summary) => true;

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var ci = CultureInfo.InvariantCulture;
            switch (kind)
            {
                case Kind.Layers:
                    var ps = benchmarkCase.Parameters;
                    return ps["Kv"] is string kv && ps["Context"] is int ctx && ps["Shape"] is string shape ? AttentionStepBenchmark.LayersFor(shape, kv, ctx).ToString(ci) : "-";
                case Kind.Megabytes:
                    return BytesOf(benchmarkCase) is long b ? (b / 1e6).ToString("F2", ci) : "-";
                case Kind.Bandwidth:
                    return GigabytesPerSecond(summary, benchmarkCase) is double g ? g.ToString("F2", ci) : "-";
                default:
                    int threads = ThreadsOf(benchmarkCase);
                    var triad = summary.BenchmarksCases.FirstOrDefault(c => c.Descriptor.Type == typeof(TriadBenchmark) && ThreadsOf(c) == threads);
                    return triad is not null && GigabytesPerSecond(summary, triad) is double t && GigabytesPerSecond(summary, benchmarkCase) is double m
                        ? (100 * m / t).ToString("F1", ci)
                        : "-";
            }
        }
    }
}
