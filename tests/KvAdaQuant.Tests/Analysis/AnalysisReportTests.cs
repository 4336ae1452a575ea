using KvAdaQuant.Analysis;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Quantization;
using SkiaSharp;

namespace KvAdaQuant.Tests.Analysis;

/// <summary>The files of an analysis: CSV, plots as real non-blank images, a self-contained report.</summary>
public class AnalysisReportTests
{
    [Fact]
    public void ReportRendersAndEveryPlotIsAValidNonBlankImage()
    {
        using var model = ModelLoader.Load("stories260K");
        int[] tokens = [1, .. model.Tokenizer!.Encode("Tom and Sue went to the shop. They bought a red ball and a big cake for mom.", addBos: false)];
        var a = new KvAnalyzer(new Transformer(model, 2)).Run(tokens, "inline", [KvBits.Two, KvBits.Four], new RowAffineProbe());
        using var dir = new TempDir();
        var written = AnalysisWriter.Write(a, dir.Path);
        var plots = new AnalysisPlotter { SkipTopSingularValues = 1 }.Write(a, dir.Path);
        var report = AnalysisReport.Write(a, plots, dir.Path);

        Assert.Equal(["singular_values", "norms_by_layer", "channel_peak", "quantization_error", "error_propagation"], plots.Select(p => p.Name).ToArray());
        foreach (var p in plots)
        {
            var bytes = File.ReadAllBytes(p.PngPath);
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
            using var bmp = SKBitmap.Decode(bytes);
            Assert.NotNull(bmp);
            Assert.True(bmp.Width >= 300 && bmp.Height >= 200, $"{p.Name}: {bmp.Width}x{bmp.Height}");
            Assert.True(LumaVariance(bmp) > 100, $"{p.Name}.png is blank (luma variance {LumaVariance(bmp)})");
            Assert.True(ColoredPixels(bmp) > 200, $"{p.Name}.png has no coloured data");

            var svg = File.ReadAllText(p.SvgPath);
            Assert.StartsWith("<?xml", svg.TrimStart());
            Assert.Contains("<svg", svg);
            Assert.True(CountOf(svg, "<path") > 20, $"{p.Name}.svg has {CountOf(svg, "<path")} path elements");
            Assert.True(System.Xml.Linq.XDocument.Parse(svg).Root is not null);
        }

        var html = File.ReadAllText(report);
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.Equal(plots.Count, CountOf(html, "src=\"data:image/png;base64,"));
        Assert.DoesNotContain("src=\"http", html);
        Assert.DoesNotContain("<link", html);
        Assert.DoesNotContain("<script", html);
        foreach (var p in plots)
        {
            Assert.Contains(Convert.ToBase64String(File.ReadAllBytes(p.PngPath)), html);
        }

        Assert.Contains("K/V Frobenius", html);
        Assert.Contains("<h2>Channel peak per layer", html);
        Assert.Contains("only K at 2 bits", html);
        Assert.All(AnalysisWriter.CsvFiles, f => Assert.Contains(Path.Combine(dir.Path, f), written));
        var norms = File.ReadAllLines(dir.File("norms.csv"));
        Assert.Equal("layer,tensor,head,frobenius,spectral,channel_peak", norms[0]);
        Assert.Equal(1 + (model.Config.Layers * 3 * model.Config.KvHeads), norms.Length);
        var sv = File.ReadAllLines(dir.File("singular_values.csv"));
        Assert.Equal(1 + (model.Config.Layers * 3 * model.Config.KvHeads * model.Config.HeadDim), sv.Length);
        Assert.Equal(1 + (4 * model.Config.Layers), File.ReadAllLines(dir.File("propagation.csv")).Length);
        Assert.Equal(1 + (2 * model.Config.Layers), File.ReadAllLines(dir.File("quantization.csv")).Length);
    }

    [Fact]
    public void WithoutQuantizationOnlySpectraAndNormsArePlotted()
    {
        using var model = ModelLoader.Load("stories260K");
        var a = new KvAnalyzer(new Transformer(model, 2)).Run([1, 300, 301, 302, 303, 304, 305, 306, 307, 308], "inline", [KvBits.Four], null);
        using var dir = new TempDir();
        var plots = new AnalysisPlotter().Write(a, dir.Path);
        Assert.Equal(["singular_values", "norms_by_layer", "channel_peak"], plots.Select(p => p.Name).ToArray());
        Assert.Empty(a.Propagation);
        Assert.Empty(a.Bits);
    }

    [Fact]
    public void SpectrumLayersAreSpreadFromFirstToLast()
    {
        Assert.Equal([0, 1, 2], AnalysisPlotter.SelectLayers(3));
        Assert.Equal([0, 2, 3, 5], AnalysisPlotter.SelectLayers(6));
        Assert.Equal([0, 10, 21, 31], AnalysisPlotter.SelectLayers(32));
    }

    private static double LumaVariance(SKBitmap bmp)
    {
        double sum = 0, sq = 0;
        int n = 0;
        for (int y = 0; y < bmp.Height; y += 2)
        {
            for (int x = 0; x < bmp.Width; x += 2)
            {
                var c = bmp.GetPixel(x, y);
                double l = (0.299 * c.Red) + (0.587 * c.Green) + (0.114 * c.Blue);
                sum += l;
                sq += l * l;
                n++;
            }
        }

        double mean = sum / n;
        return (sq / n) - (mean * mean);
    }

    private static int ColoredPixels(SKBitmap bmp)
    {
        int n = 0;
        for (int y = 0; y < bmp.Height; y++)
        {
            for (int x = 0; x < bmp.Width; x++)
            {
                var c = bmp.GetPixel(x, y);
                n += Math.Max(c.Red, Math.Max(c.Green, c.Blue)) - Math.Min(c.Red, Math.Min(c.Green, c.Blue)) > 60 ? 1 : 0;
            }
        }

        return n;
    }

    private static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + what.Length, StringComparison.Ordinal))
        {
            n++;
        }

        return n;
    }
}
