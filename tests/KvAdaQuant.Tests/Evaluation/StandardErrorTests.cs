using KvAdaQuant.Evaluation;

namespace KvAdaQuant.Tests.Evaluation;

/// <summary>
/// Standard errors of the evaluation metrics: lm-evaluation-harness's sample formula for proportions, only finite ones
/// kept, and the markdown table showing each as <c>value ± error</c> beside its metric while CSV and JSON keep columns.
/// </summary>
public class StandardErrorTests
{
    [Fact]
    public void A_proportions_error_is_the_sample_standard_deviation_over_root_n()
    {
        Assert.Equal(0.05, StandardError.OfProportion(0.5, 101), 12);
        // Written out over 0/1 outcomes: 30 ones of 120.
        var x = Enumerable.Range(0, 120).Select(i => i < 30 ? 1.0 : 0.0).ToArray();
        double mean = x.Average();
        double sd = Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Length - 1));
        Assert.Equal(sd / Math.Sqrt(x.Length), StandardError.OfProportion(0.25, 120), 12);
        Assert.Equal(0, StandardError.OfProportion(1, 10));
        Assert.True(double.IsNaN(StandardError.OfProportion(1, 1)));

        var metrics = new Dictionary<string, double>();
        StandardError.Add(metrics, "acc", double.NaN);
        Assert.Empty(metrics);
        StandardError.Add(metrics, "acc", 0.01);
        StandardError.Add(metrics, "perplexity", 0.2);
        Assert.Equal(["acc_stderr", "perplexity_uncertainty"], metrics.Keys.Order());
    }

    [Fact]
    public void The_markdown_table_shows_value_plus_minus_error_and_csv_and_json_keep_the_columns()
    {
        var rows = new[]
        {
            new EvaluationRow("k4v2", 4, 2, 3, new EvaluationResult(new Dictionary<string, double> { ["acc"] = 0.5, ["acc_stderr"] = 0.05, ["acc_norm"] = 0.25 }, 101, 1)),
            new EvaluationRow("k2v4", 2, 4, 3, new EvaluationResult(new Dictionary<string, double> { ["acc"] = 0.75, ["acc_stderr"] = 0.0433, ["acc_norm"] = 0.5 }, 101, 1)),
        };
        var t = new EvaluationTable("m.bin", "arc_easy", "d", rows);
        var md = t.ToMarkdown().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("| cache | avg bits | acc | acc_norm |", md[0]);
        Assert.Equal("| k4v2 | 3 | 0.5 ± 0.05 | 0.25 |", md[2]);
        Assert.Equal("| k2v4 | 3 | 0.75 ± 0.0433 | 0.5 |", md[3]);
        var csv = t.ToCsv().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("cache,k_bits,v_bits,avg_bits,items,seconds,acc,acc_stderr,acc_norm", csv[0]);
        Assert.Equal("k4v2,4,2,3,101,1,0.5,0.05,0.25", csv[1]);
        using var doc = System.Text.Json.JsonDocument.Parse(t.ToJson());
        Assert.Equal(0.05, doc.RootElement.GetProperty("results")[0].GetProperty("metrics").GetProperty("acc_stderr").GetDouble());
    }
}
