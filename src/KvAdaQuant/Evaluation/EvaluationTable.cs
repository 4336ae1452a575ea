using System.Globalization;
using System.Text;
using System.Text.Json;

namespace KvAdaQuant.Evaluation;

/// <summary>Results of one task over several caches, as a markdown table, CSV and JSON.</summary>
public sealed class EvaluationTable
{
    /// <summary>Creates the table.</summary>
    public EvaluationTable(string model, string task, string data, IReadOnlyList<EvaluationRow> rows)
    {
        Model = model;
        Task = task;
        Data = data;
        Rows = rows;
        Metrics = rows.SelectMany(r => r.Result.Metrics.Keys).Distinct().ToArray();
    }

    /// <summary>Model path.</summary>
    public string Model { get; }

    /// <summary>Task.</summary>
    public string Task { get; }

    /// <summary>Data description.</summary>
    public string Data { get; }

    /// <summary>Rows.</summary>
    public IReadOnlyList<EvaluationRow> Rows { get; }

    /// <summary>Metric names, in first-seen order.</summary>
    public IReadOnlyList<string> Metrics { get; }

    /// <summary>
    /// Markdown table: cache, average bits, each metric; a metric with a standard error (<see cref="StandardError.NameFor"/>)
    /// shows it in its own column as <c>value ± error</c> (CSV and JSON keep the errors in columns of their own).
    /// </summary>
    public string ToMarkdown()
    {
        var errors = Metrics.Where(m => Metrics.Contains(StandardError.NameFor(m))).Select(StandardError.NameFor).ToHashSet();
        var columns = Metrics.Where(m => !errors.Contains(m)).ToArray();
        var sb = new StringBuilder();
        sb.Append("| cache | avg bits | ").Append(string.Join(" | ", columns)).AppendLine(" |");
        sb.Append("|---|---:|").Append(string.Concat(columns.Select(_ => "---:|"))).AppendLine();
        foreach (var r in Rows)
        {
            sb.Append("| ").Append(r.Name).Append(" | ").Append(r.AverageBits.ToString("0.###", CultureInfo.InvariantCulture)).Append(" | ");
            sb.Append(r.Error is not null ? $"failed: {r.Error.Replace("|", "/", StringComparison.Ordinal)}" + string.Concat(Enumerable.Repeat(" |", Math.Max(columns.Length - 1, 0))) :
                string.Join(" | ", columns.Select(m => Cell(r.Result.Metrics, m)))).AppendLine(" |");
        }

        return sb.ToString();
    }

    // A metric's cell: its value, with " ± error" where the row has its standard error.
    private static string Cell(IReadOnlyDictionary<string, double> metrics, string metric)
    {
        if (!metrics.TryGetValue(metric, out double v))
        {
            return string.Empty;
        }

        return metrics.TryGetValue(StandardError.NameFor(metric), out double e) ? $"{Format(metric, v)} ± {Format(metric, e)}" : Format(metric, v);
    }

    /// <summary>CSV with a header row: cache, k_bits, v_bits, avg_bits, items, seconds, metrics.</summary>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.Append("cache,k_bits,v_bits,avg_bits,items,seconds,").AppendLine(string.Join(",", Metrics));
        foreach (var r in Rows)
        {
            sb.Append(Csv(r.Name)).Append(',').Append(Num(r.KeyBits)).Append(',').Append(Num(r.ValueBits)).Append(',').Append(Num(r.AverageBits))
                .Append(',').Append(r.Result.Items.ToString(CultureInfo.InvariantCulture)).Append(',').Append(Num(r.Result.Seconds)).Append(',')
                .AppendLine(string.Join(",", Metrics.Select(m => r.Result.Metrics.TryGetValue(m, out double v) ? Num(v) : string.Empty)));
        }

        return sb.ToString();
    }

    /// <summary>JSON: model, task, data, and per row the cache, widths, average bits, items, seconds and metrics.</summary>
    public string ToJson() => JsonSerializer.Serialize(
        new
        {
            model = Model,
            task = Task,
            data = Data,
            results = Rows.Select(r => new
            {
                cache = r.Name,
                k_bits = r.KeyBits,
                v_bits = r.ValueBits,
                avg_bits = r.AverageBits,
                items = r.Result.Items,
                seconds = r.Result.Seconds,
                metrics = r.Result.Metrics,
                error = r.Error,
            }),
        },
        new JsonSerializerOptions { WriteIndented = true });

    /// <summary>A metric formatted for the markdown table.</summary>
    public static string Format(string metric, double v) => metric switch
    {
        _ when metric.Contains("kl", StringComparison.Ordinal) => v.ToString(v != 0 && Math.Abs(v) < 1e-3 ? "0.###e+0" : "0.#####", CultureInfo.InvariantCulture),
        _ when metric.StartsWith("shots", StringComparison.Ordinal) => v.ToString("0", CultureInfo.InvariantCulture),
        _ when metric.Contains("perplexity", StringComparison.Ordinal) => v.ToString("0.###", CultureInfo.InvariantCulture),
        _ => v.ToString("0.####", CultureInfo.InvariantCulture),
    };

    private static string Num(double? v) => v is double d ? d.ToString("R", CultureInfo.InvariantCulture) : string.Empty;

    private static string Csv(string s) => s.Contains(',', StringComparison.Ordinal) || s.Contains('"', StringComparison.Ordinal) ? "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : s;
}
