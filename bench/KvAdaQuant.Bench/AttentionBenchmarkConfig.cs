using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace KvAdaQuant.Bench;

/// <summary>Adds the cache-size and effective-bandwidth columns to <see cref="AttentionBenchmarks"/>.</summary>
public sealed class AttentionBenchmarkConfig : ManualConfig
{
    /// <summary>Creates the config.</summary>
    public AttentionBenchmarkConfig()
    {
        AddColumn(new CacheColumn(bandwidth: false), new CacheColumn(bandwidth: true));
    }

    private sealed class CacheColumn(bool bandwidth) : IColumn
    {
        public string Id => bandwidth ? "GBps" : "CacheMB";

        public string ColumnName => bandwidth ? "GB/s" : "CacheMB";

        public bool AlwaysShow => true;

        public ColumnCategory Category => ColumnCategory.Custom;

        public int PriorityInCategory => bandwidth ? 1 : 0;

        public bool IsNumeric => true;

        public UnitType UnitType => UnitType.Dimensionless;

        public string Legend => bandwidth ? "bytes of K and V read per step / mean time, in 1e9 bytes per second" : "bytes of K and V held (and read) per step, in 1e6 bytes";

        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

        public bool IsAvailable(Summary summary) => true;

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var ps = benchmarkCase.Parameters;
            if (ps["Kv"] is not string kv || ps["Context"] is not int ctx)
            {
                return "-";
            }

            long bytes = AttentionBenchmarks.CacheBytes(kv, ctx);
            if (!bandwidth)
            {
                return (bytes / 1e6).ToString("F2", System.Globalization.CultureInfo.InvariantCulture);
            }

            var stats = summary[benchmarkCase]?.ResultStatistics;
            return stats is null ? "-" : (bytes / stats.Mean).ToString("F2", System.Globalization.CultureInfo.InvariantCulture);
        }
    }
}
