using ScottPlot;
using SkiaSharp;

namespace KvAdaQuant.Analysis;

/// <summary>
/// Draws the analysis figures with ScottPlot as PNG and SVG: the paper-style singular value spectra of K and V
/// (mean across heads with a min-max band) for selected layers, norms by layer, quantization error by bits and
/// error propagation by layer.
/// </summary>
public sealed class AnalysisPlotter
{
    private static readonly Color KeyColor = Color.FromHex("#d62728");
    private static readonly Color ValueColor = Color.FromHex("#1f77b4");
    private static readonly Color PreRopeColor = Color.FromHex("#ff7f0e");

    /// <summary>Width of one panel in pixels.</summary>
    public int PanelWidth { get; init; } = 420;

    /// <summary>Height of a figure in pixels.</summary>
    public int Height { get; init; } = 340;

    /// <summary>The largest singular values left out of the spectrum figure (they can dwarf the rest).</summary>
    public int SkipTopSingularValues { get; init; }

    /// <summary>Layers shown in the spectrum figure (null: up to four spread from first to last).</summary>
    public IReadOnlyList<int>? SpectrumLayers { get; init; }

    /// <summary>Names (without .png/.svg) of every figure the plotter can draw.</summary>
    public static readonly IReadOnlyList<string> FigureNames = ["singular_values", "norms_by_layer", "channel_peak", "quantization_error", "error_propagation"];

    /// <summary>
    /// Writes every figure that the analysis has data for into <paramref name="dir"/>, and deletes the PNG and SVG of
    /// the figures it has no data for, so that a folder written again holds no figure of an earlier analysis.
    /// </summary>
    public IReadOnlyList<PlotFile> Write(KvAnalysis a, string dir)
    {
        Directory.CreateDirectory(dir);
        var files = new List<PlotFile>
        {
            SingularValues(a, dir),
            Norms(a, dir),
            ChannelPeak(a, dir),
        };
        if (a.Layers.Any(l => l.Quantization.Count > 0))
        {
            files.Add(QuantizationError(a, dir));
        }

        if (a.Propagation.Count > 0)
        {
            files.Add(Propagation(a, dir));
        }

        foreach (var name in FigureNames)
        {
            foreach (var ext in new[] { ".png", ".svg" })
            {
                string path = Path.Combine(dir, name + ext);
                if (!files.Any(f => f.PngPath == path || f.SvgPath == path))
                {
                    File.Delete(path);
                }
            }
        }

        return files;
    }

    /// <summary>Up to four layers spread evenly from the first to the last.</summary>
    public static int[] SelectLayers(int layers)
    {
        if (layers <= 4)
        {
            return Enumerable.Range(0, layers).ToArray();
        }

        return Enumerable.Range(0, 4).Select(i => (int)Math.Round(i * (layers - 1) / 3.0)).Distinct().ToArray();
    }

    private PlotFile SingularValues(KvAnalysis a, string dir)
    {
        var selected = (SpectrumLayers ?? SelectLayers(a.Layers.Count)).Where(l => l >= 0 && l < a.Layers.Count).ToArray();
        var panels = new List<Plot>();
        foreach (int l in selected)
        {
            var p = new Plot();
            var layer = a.Layers[l];
            Band(p, layer.K.SingularValueBand(), KeyColor, "K (post-RoPE)");
            Band(p, layer.V.SingularValueBand(), ValueColor, "V");
            p.Title($"Layer {l}");
            p.XLabel("singular value index");
            p.YLabel("singular value");
            p.ShowLegend(Alignment.UpperRight);
            panels.Add(p);
        }

        string skip = SkipTopSingularValues > 0 ? $", top {SkipTopSingularValues} skipped" : string.Empty;
        return Save(panels, dir, "singular_values", $"Singular values of K and V by index: mean over KV heads, band min-max{skip}");
    }

    private PlotFile Norms(KvAnalysis a, string dir)
    {
        var frob = new Plot();
        var spec = new Plot();
        double[] xs = a.Layers.Select(l => (double)l.Layer).ToArray();
        foreach (var (p, pick, name) in new[] { (frob, (Func<HeadSpectra, SpreadStatistics>)(s => s.FrobeniusStats), "Frobenius"), (spec, s => s.SpectralStats, "spectral") })
        {
            foreach (var (sel, color, label) in new[] { ((Func<LayerAnalysis, HeadSpectra>)(l => l.K), KeyColor, "K"), (l => l.V, ValueColor, "V") })
            {
                var stats = a.Layers.Select(l => pick(sel(l))).ToArray();
                var fill = p.Add.FillY(xs, stats.Select(s => s.Min).ToArray(), stats.Select(s => s.Max).ToArray());
                fill.FillColor = color.WithAlpha(0.2);
                fill.LineWidth = 0;
                var line = p.Add.Scatter(xs, stats.Select(s => s.Mean).ToArray(), color);
                line.LegendText = $"{label}";
            }

            p.Title($"{name} norm by layer");
            p.XLabel("layer");
            p.YLabel($"{name} norm");
            p.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
            p.ShowLegend(Alignment.UpperLeft);
        }

        return Save([frob, spec], dir, "norms_by_layer", "K vs V norms by layer: mean over KV heads, band min-max");
    }

    private PlotFile ChannelPeak(KvAnalysis a, string dir)
    {
        var p = new Plot();
        double[] xs = a.Layers.Select(l => (double)l.Layer).ToArray();
        foreach (var (sel, color, label) in new[]
        {
            ((Func<LayerAnalysis, HeadSpectra>)(l => l.K), KeyColor, "K (post-RoPE)"),
            (l => l.KPreRope, PreRopeColor, "K pre-RoPE"),
            (l => l.V, ValueColor, "V"),
        })
        {
            var stats = a.Layers.Select(l => sel(l).ChannelPeakStats).ToArray();
            var fill = p.Add.FillY(xs, stats.Select(s => s.Min).ToArray(), stats.Select(s => s.Max).ToArray());
            fill.FillColor = color.WithAlpha(0.2);
            fill.LineWidth = 0;
            var line = p.Add.Scatter(xs, stats.Select(s => s.Mean).ToArray(), color);
            line.LegendText = label;
        }

        p.Title("Channel peak by layer (1 = every channel alike)");
        p.XLabel("layer");
        p.YLabel("channel peak");
        p.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };

        // Room above the bands for the legend.
        double top = a.Layers.Max(l => Math.Max(l.KPreRope.ChannelPeakStats.Max, Math.Max(l.K.ChannelPeakStats.Max, l.V.ChannelPeakStats.Max)));
        p.Axes.SetLimitsY(1, 1 + ((top - 1) * 1.45));
        p.ShowLegend(Alignment.UpperCenter, ScottPlot.Orientation.Horizontal);
        return Save([p], dir, "channel_peak", "How unevenly K and V spread their energy over the channels of a head: mean over KV heads, band min-max");
    }

    private PlotFile QuantizationError(KvAnalysis a, string dir)
    {
        var rel = new Plot();
        var abs = new Plot();
        double[] bits = a.Bits;
        foreach (var (pick, norm, color, label) in new[]
        {
            ((Func<QuantizationError, double>)(q => q.K), (Func<LayerAnalysis, double>)(l => TensorNorm(l.K)), KeyColor, "K"),
            (q => q.V, l => TensorNorm(l.V), ValueColor, "V"),
        })
        {
            foreach (var (p, scale) in new[] { (rel, false), (abs, true) })
            {
                var perBits = a.Bits.Select(b => a.Layers.Select(l => pick(l.Quantization.First(q => q.Bits == b)) * (scale ? norm(l) : 1)).ToArray()).ToArray();
                var fill = p.Add.FillY(bits, perBits.Select(v => Log10(v.Min())).ToArray(), perBits.Select(v => Log10(v.Max())).ToArray());
                fill.FillColor = color.WithAlpha(0.2);
                fill.LineWidth = 0;
                var line = p.Add.Scatter(bits, perBits.Select(v => Log10(v.Average())).ToArray(), color);
                line.LegendText = label;
            }
        }

        rel.Title("Relative error ||A - Q(A)|| / ||A||");
        abs.Title("Absolute error ||A - Q(A)||");
        foreach (var p in new[] { rel, abs })
        {
            p.XLabel("bits");
            p.YLabel("Frobenius error (log scale)");
            LogAxis(p);
            p.ShowLegend(Alignment.UpperRight);
        }

        return Save([rel, abs], dir, "quantization_error", "Quantization error of K and V by bits (Frobenius, whole layer): mean over layers, band min-max");
    }

    private PlotFile Propagation(KvAnalysis a, string dir)
    {
        var p = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var bitsList = a.Propagation.Select(r => r.Bits).Distinct().OrderBy(b => b).ToArray();
        foreach (var run in a.Propagation.Where(r => r.Failure is null))
        {
            double[] xs = Enumerable.Range(0, run.ResidualError.Length).Select(i => (double)i).ToArray();
            var line = p.Add.Scatter(xs, run.ResidualError.Select(Log10).ToArray(), palette.GetColor(Array.IndexOf(bitsList, run.Bits)));
            line.LinePattern = run.Quantized == "k" ? LinePattern.Solid : LinePattern.Dashed;
            line.MarkerShape = run.Quantized == "k" ? MarkerShape.FilledCircle : MarkerShape.OpenSquare;
            line.LegendText = $"only {run.Quantized.ToUpperInvariant()} at {run.Bits} bits (KL {run.KlMean:G3})";
        }

        p.Title("Residual stream relative error after each layer");
        p.XLabel("layer");
        p.YLabel("relative error (log scale)");
        LogAxis(p);
        p.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        p.ShowLegend(Edge.Right);
        return Save([p], dir, "error_propagation", "Error propagation by layer, only K vs only V quantized");
    }

    private void Band(Plot p, SpreadStatistics[] band, Color color, string label)
    {
        int skip = Math.Min(SkipTopSingularValues, Math.Max(0, band.Length - 1));
        var shown = band.Skip(skip).ToArray();
        double[] xs = Enumerable.Range(skip + 1, shown.Length).Select(i => (double)i).ToArray();
        var fill = p.Add.FillY(xs, shown.Select(s => s.Min).ToArray(), shown.Select(s => s.Max).ToArray());
        fill.FillColor = color.WithAlpha(0.25);
        fill.LineWidth = 0;
        var line = p.Add.ScatterLine(xs, shown.Select(s => s.Mean).ToArray(), color);
        line.LineWidth = 2;
        line.LegendText = label;
    }

    private static double TensorNorm(HeadSpectra s) => Math.Sqrt(s.Frobenius.Sum(f => f * f));

    private static double Log10(double v) => v > 0 && double.IsFinite(v) ? Math.Log10(v) : double.NaN;

    private static void LogAxis(Plot p)
    {
        p.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            LabelFormatter = y => Math.Pow(10, y).ToString("G2", System.Globalization.CultureInfo.InvariantCulture),
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
        };
    }

    private PlotFile Save(IReadOnlyList<Plot> panels, string dir, string name, string title)
    {
        string png = Path.Combine(dir, name + ".png");
        string svg = Path.Combine(dir, name + ".svg");
        int width = panels.Count == 1 ? PanelWidth * 2 : PanelWidth * panels.Count;
        if (panels.Count == 1)
        {
            panels[0].SavePng(png, width, Height);
            panels[0].SaveSvg(svg, width, Height);
        }
        else
        {
            var multi = new Multiplot(panels[0]) { Layout = new ScottPlot.MultiplotLayouts.Columns() };
            foreach (var p in panels.Skip(1))
            {
                multi.AddPlot(p);
            }

            multi.SavePng(png, width, Height);
            using (var stream = File.Create(svg))
            using (var canvas = SKSvgCanvas.Create(new SKRect(0, 0, width, Height), stream))
            {
                canvas.Clear(SKColors.White);
                multi.Render(canvas, new PixelRect(0, width, Height, 0));
            }
        }

        foreach (var p in panels)
        {
            p.Dispose();
        }

        return new PlotFile(name, title, png, svg);
    }
}
