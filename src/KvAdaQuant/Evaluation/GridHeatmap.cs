using System.Globalization;
using ScottPlot;

namespace KvAdaQuant.Evaluation;

/// <summary>A K-bits x V-bits heat map of one metric over a grid evaluation, written as PNG and SVG (ScottPlot), each cell labelled with its value.</summary>
public static class GridHeatmap
{
    /// <summary>Writes <c>{stem}.png</c> and <c>{stem}.svg</c> into <paramref name="dir"/>; returns both paths.</summary>
    public static (string Png, string Svg) Write(EvaluationTable table, string metric, string dir, string stem)
    {
        var cells = table.Rows.Where(r => r.KeyBits is not null && r.ValueBits is not null && r.Result.Metrics.ContainsKey(metric)).ToArray();
        if (cells.Length == 0)
        {
            throw new ArgumentException($"heat map: no grid rows with metric {metric}");
        }

        var ks = cells.Select(r => r.KeyBits!.Value).Distinct().Order().ToArray();
        var vs = cells.Select(r => r.ValueBits!.Value).Distinct().Order().ToArray();
        var data = new double[vs.Length, ks.Length];
        for (int i = 0; i < vs.Length; i++)
        {
            for (int j = 0; j < ks.Length; j++)
            {
                data[i, j] = double.NaN;
            }
        }

        foreach (var r in cells)
        {
            // Row 0 is drawn at the top: put the widest V there so V grows upward.
            data[vs.Length - 1 - Array.IndexOf(vs, r.ValueBits!.Value), Array.IndexOf(ks, r.KeyBits!.Value)] = r.Result.Metrics[metric];
        }

        var plot = new Plot();
        var hm = plot.Add.Heatmap(data);
        hm.Colormap = new ScottPlot.Colormaps.Viridis();
        plot.Add.ColorBar(hm);
        foreach (var r in cells)
        {
            double x = Array.IndexOf(ks, r.KeyBits!.Value);
            double y = Array.IndexOf(vs, r.ValueBits!.Value);
            var t = plot.Add.Text(EvaluationTable.Format(metric, r.Result.Metrics[metric]), x, y);
            t.LabelAlignment = Alignment.MiddleCenter;
            t.LabelFontColor = Colors.White;
            t.LabelBackgroundColor = Colors.Black.WithAlpha(0.4);
            t.LabelFontSize = 12;
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            ks.Select((_, i) => (double)i).ToArray(), ks.Select(k => "K" + k.ToString("0.##", CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            vs.Select((_, i) => (double)i).ToArray(), vs.Select(v => "V" + v.ToString("0.##", CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.SetLimits(-0.5, ks.Length - 0.5, -0.5, vs.Length - 0.5);
        plot.Title($"{table.Task}: {metric} by K and V bits");
        plot.XLabel("key bits");
        plot.YLabel("value bits");
        Directory.CreateDirectory(dir);
        string png = Path.Combine(dir, stem + ".png");
        string svg = Path.Combine(dir, stem + ".svg");
        plot.SavePng(png, 640, 520);
        plot.SaveSvg(svg, 640, 520);
        return (png, svg);
    }
}
