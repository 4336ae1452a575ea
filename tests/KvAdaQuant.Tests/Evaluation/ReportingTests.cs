using KvAdaQuant.Evaluation;

namespace KvAdaQuant.Tests.Evaluation;

public class ReportingTests
{
    private static EvaluationTable Grid()
    {
        var rows = new List<EvaluationRow>();
        foreach (var k in new double[] { 2, 4, 8 })
        {
            foreach (var v in new double[] { 2, 4 })
            {
                var metrics = new Dictionary<string, double> { ["mean_kl"] = 1.0 / (k * k * v), ["perplexity"] = 10 + (1 / k) };
                rows.Add(new EvaluationRow($"k{k}v{v}", k, v, ((k + v) / 2) + 1, new EvaluationResult(metrics, 100, 0.5)));
            }
        }

        return new EvaluationTable("m.bin", "kl", "text", rows);
    }

    [Fact]
    public void Table_renders_markdown_csv_and_json_with_every_row()
    {
        var t = Grid();
        var md = t.ToMarkdown().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("| cache | avg bits | mean_kl | perplexity |", md[0]);
        Assert.Equal(2 + 6, md.Length);
        Assert.Contains("| k2v2 | 3 | 0.125 | 10.5 |", md);
        var csv = t.ToCsv().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("cache,k_bits,v_bits,avg_bits,items,seconds,mean_kl,perplexity", csv[0]);
        Assert.Equal("k8v4,8,4,7,100,0.5,0.00390625,10.125", csv[^1]);
        using var doc = System.Text.Json.JsonDocument.Parse(t.ToJson());
        Assert.Equal(6, doc.RootElement.GetProperty("results").GetArrayLength());
    }

    [Fact]
    public void Heatmap_writes_a_valid_non_blank_png_and_an_svg()
    {
        using var dir = new TempDir();
        var (png, svg) = GridHeatmap.Write(Grid(), "mean_kl", dir.Path, "heatmap");
        var bytes = File.ReadAllBytes(png);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
        Assert.True(bytes.Length > 5000, $"PNG of {bytes.Length} bytes looks blank");
        var text = File.ReadAllText(svg);
        Assert.Contains("<svg", text);
        Assert.Contains("K8", text);
        Assert.Contains("V4", text);
    }
}
