using System.Globalization;
using System.Net;
using System.Text;

namespace KvAdaQuant.Analysis;

/// <summary>
/// Writes <c>report.html</c>: one self-contained page (no external resources, readable offline) with the
/// figures embedded as base64 PNG and the tables of the analysis.
/// </summary>
public static class AnalysisReport
{
    /// <summary>The report file name.</summary>
    public const string FileName = "report.html";

    /// <summary>Writes the report for <paramref name="a"/> with <paramref name="plots"/> into <paramref name="dir"/>; returns its path.</summary>
    public static string Write(KvAnalysis a, IReadOnlyList<PlotFile> plots, string dir)
    {
        var path = Path.Combine(dir, FileName);
        File.WriteAllText(path, Render(a, plots));
        return path;
    }

    /// <summary>The report as HTML text.</summary>
    public static string Render(KvAnalysis a, IReadOnlyList<PlotFile> plots)
    {
        var m = a.Model;
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>KV analysis: ").Append(E(Path.GetFileName(m.Path))).Append("</title>\n");
        sb.Append("<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}")
          .Append("table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}")
          .Append("th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}")
          .Append("figure{margin:1.5em 0}figcaption{font-style:italic;color:#555}</style></head><body>\n");
        sb.Append("<h1>KV analysis: ").Append(E(Path.GetFileName(m.Path))).Append("</h1>\n<p>")
          .Append(E($"{m.Format}; {m.Layers} layers, {m.Heads} query heads, {m.KvHeads} KV heads of {m.HeadDim}; dim {m.Dim}; "))
          .Append(E($"{a.Tokens} calibration tokens from {a.Data}; {a.Seconds:F1} s.")).Append("</p>\n");
        if (a.Schemes.Length > 0)
        {
            sb.Append("<p>Quantization: ").Append(E(string.Join("; ", a.Schemes.Select((s, i) => $"{a.Bits[i]} bits: {s}")))).Append("</p>\n");
        }

        sb.Append("<h2>K / V ratios per layer</h2>\n<p>Ratios of the head-mean norms of the captured K (after RoPE) over V, and of the whole W_K over W_V.</p>\n");
        Table(sb, ["layer", "K/V Frobenius", "K/V spectral", "W_K/W_V Frobenius", "W_K/W_V spectral"],
            a.Layers.Select(l => new object[] { l.Layer, l.Ratios.Frobenius, l.Ratios.Spectral, l.Ratios.WeightFrobenius, l.Ratios.WeightSpectral }));

        sb.Append("<h2>Activation norms per layer (mean [min, max] across KV heads)</h2>\n");
        Table(sb, ["layer", "K Frobenius", "K spectral", "K pre-RoPE Frobenius", "K pre-RoPE spectral", "V Frobenius", "V spectral"],
            a.Layers.Select(l => new object[] { l.Layer, S(l.K.FrobeniusStats), S(l.K.SpectralStats), S(l.KPreRope.FrobeniusStats), S(l.KPreRope.SpectralStats), S(l.V.FrobeniusStats), S(l.V.SpectralStats) }));

        sb.Append("<h2>Channel peak per layer (mean [min, max] across KV heads)</h2>\n<p>The largest channel's norm over the root mean square channel norm of each head's matrix: 1 when every channel carries the same energy. A per-token quantization group's range follows its largest channel, so the higher this is, the more error per-token groups make (and the more a rotation, <code>rot</code>, can recover).</p>\n");
        Table(sb, ["layer", "K", "K pre-RoPE", "V"],
            a.Layers.Select(l => new object[] { l.Layer, S(l.K.ChannelPeakStats), S(l.KPreRope.ChannelPeakStats), S(l.V.ChannelPeakStats) }));

        sb.Append("<h2>Weight norms per layer (whole matrix; per KV head slice mean [min, max])</h2>\n");
        Table(sb, ["layer", "W_K Frobenius", "W_K spectral", "W_V Frobenius", "W_V spectral", "W_K head Frobenius", "W_V head Frobenius"],
            a.Layers.Select(l => new object[] { l.Layer, l.WK.WholeFrobenius, l.WK.WholeSpectral, l.WV.WholeFrobenius, l.WV.WholeSpectral, S(SpreadStatistics.Of(l.WK.Frobenius)), S(SpreadStatistics.Of(l.WV.Frobenius)) }));

        if (a.Bits.Length > 0 && a.Layers.All(l => l.Quantization.Count == a.Bits.Length))
        {
            sb.Append("<h2>Relative quantization error ||A - Q(A)||<sub>F</sub> / ||A||<sub>F</sub></h2>\n");
            var header = new List<string> { "layer" };
            foreach (double b in a.Bits)
            {
                header.Add($"K {b}b");
                header.Add($"V {b}b");
            }

            Table(sb, header, a.Layers.Select(l => new object[] { l.Layer }.Concat(l.Quantization.SelectMany(q => new object[] { q.K, q.V })).ToArray()));
        }

        if (a.Propagation.Count > 0)
        {
            sb.Append("<h2>Error propagation: only K vs only V quantized</h2>\n<p>Relative Frobenius error of the residual stream after each layer against the unquantized pass, and the KL divergence of the next-token distribution (mean over positions and at the last one).</p>\n");
            int layers = a.Layers.Count;
            var header = new List<string> { "run" };
            header.AddRange(Enumerable.Range(0, layers).Select(l => $"residual L{l}"));
            header.AddRange(["KL mean", "KL last", "top-1 agreement"]);
            Table(sb, header, a.Propagation.Select(p => new object[] { $"only {p.Quantized.ToUpperInvariant()} at {p.Bits} bits" }
                .Concat(p.ResidualError.Cast<object>()).Concat(new object[] { p.KlMean, p.KlLast, p.Top1Agreement }).ToArray()));
            foreach (var p in a.Propagation.Where(p => p.Failure is not null))
            {
                sb.Append("<p><b>").Append(E($"only {p.Quantized.ToUpperInvariant()} at {p.Bits} bits failed:")).Append("</b> ").Append(E(p.Failure!)).Append("</p>\n");
            }

            sb.Append("<h3>Attention output relative error per layer</h3>\n");
            var aheader = new List<string> { "run" };
            aheader.AddRange(Enumerable.Range(0, layers).Select(l => $"attention L{l}"));
            Table(sb, aheader, a.Propagation.Select(p => new object[] { $"only {p.Quantized.ToUpperInvariant()} at {p.Bits} bits" }.Concat(p.AttentionError.Cast<object>()).ToArray()));
        }

        sb.Append("<h2>Figures</h2>\n");
        foreach (var p in plots)
        {
            string data = Convert.ToBase64String(File.ReadAllBytes(p.PngPath));
            sb.Append("<figure><img alt=\"").Append(E(p.Title)).Append("\" src=\"data:image/png;base64,").Append(data).Append("\"><figcaption>")
              .Append(E(p.Title)).Append("</figcaption></figure>\n");
        }

        sb.Append("</body></html>\n");
        return sb.ToString();
    }

    private static string S(SpreadStatistics s) => $"{F(s.Mean)} [{F(s.Min)}, {F(s.Max)}]";

    private static string F(double d) => d.ToString("G4", CultureInfo.InvariantCulture);

    private static string E(string s) => WebUtility.HtmlEncode(s);

    private static void Table(StringBuilder sb, IEnumerable<string> header, IEnumerable<object[]> rows)
    {
        sb.Append("<table><tr>");
        foreach (var h in header)
        {
            sb.Append("<th>").Append(E(h)).Append("</th>");
        }

        sb.Append("</tr>\n");
        foreach (var r in rows)
        {
            sb.Append("<tr>");
            foreach (var c in r)
            {
                sb.Append("<td>").Append(E(c is double d ? F(d) : c.ToString() ?? string.Empty)).Append("</td>");
            }

            sb.Append("</tr>\n");
        }

        sb.Append("</table>\n");
    }
}
