using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace KvAdaQuant.Analysis;

/// <summary>Writes a <see cref="KvAnalysis"/> as <c>analysis.json</c> and CSV tables.</summary>
public static class AnalysisWriter
{
    /// <summary>The JSON file name.</summary>
    public const string JsonFile = "analysis.json";

    /// <summary>Names of the CSV files written.</summary>
    public static readonly IReadOnlyList<string> CsvFiles = ["norms.csv", "weights.csv", "singular_values.csv", "quantization.csv", "propagation.csv"];

    /// <summary>Serializer settings: snake_case names, indented, NaN/Infinity allowed as strings.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>The analysis as JSON text.</summary>
    public static string ToJson(KvAnalysis analysis) => JsonSerializer.Serialize(analysis, JsonOptions);

    /// <summary>Writes <c>analysis.json</c> and the CSV files into <paramref name="dir"/>; returns the paths written.</summary>
    public static IReadOnlyList<string> Write(KvAnalysis analysis, string dir)
    {
        Directory.CreateDirectory(dir);
        var written = new List<string>();
        void Save(string name, string text)
        {
            var path = Path.Combine(dir, name);
            File.WriteAllText(path, text);
            written.Add(path);
        }

        Save(JsonFile, ToJson(analysis));
        Save("norms.csv", NormsCsv(analysis));
        Save("weights.csv", WeightsCsv(analysis));
        Save("singular_values.csv", SingularValuesCsv(analysis));
        Save("quantization.csv", QuantizationCsv(analysis));
        Save("propagation.csv", PropagationCsv(analysis));
        return written;
    }

    /// <summary>Per layer, tensor and head: Frobenius and spectral norm and the channel peak (one row per head).</summary>
    public static string NormsCsv(KvAnalysis a)
    {
        var sb = new StringBuilder("layer,tensor,head,frobenius,spectral,channel_peak\n");
        foreach (var l in a.Layers)
        {
            foreach (var (name, s) in Tensors(l))
            {
                for (int h = 0; h < s.Frobenius.Length; h++)
                {
                    Row(sb, l.Layer, name, h, s.Frobenius[h], s.Spectral[h], s.ChannelPeak[h]);
                }
            }
        }

        return sb.ToString();
    }

    /// <summary>Per layer: W_K and W_V norms, whole ("all") and per KV head slice.</summary>
    public static string WeightsCsv(KvAnalysis a)
    {
        var sb = new StringBuilder("layer,matrix,head,frobenius,spectral\n");
        foreach (var l in a.Layers)
        {
            foreach (var (name, w) in new[] { ("w_k", l.WK), ("w_v", l.WV) })
            {
                Row(sb, l.Layer, name, "all", w.WholeFrobenius, w.WholeSpectral);
                for (int h = 0; h < w.Frobenius.Length; h++)
                {
                    Row(sb, l.Layer, name, h, w.Frobenius[h], w.Spectral[h]);
                }
            }
        }

        return sb.ToString();
    }

    /// <summary>Every singular value: layer, tensor, head, index, value.</summary>
    public static string SingularValuesCsv(KvAnalysis a)
    {
        var sb = new StringBuilder("layer,tensor,head,index,singular_value\n");
        foreach (var l in a.Layers)
        {
            foreach (var (name, s) in Tensors(l))
            {
                for (int h = 0; h < s.SingularValues.Length; h++)
                {
                    for (int i = 0; i < s.SingularValues[h].Length; i++)
                    {
                        Row(sb, l.Layer, name, h, i, s.SingularValues[h][i]);
                    }
                }
            }
        }

        return sb.ToString();
    }

    /// <summary>Per layer and bits: relative quantization error of K and V.</summary>
    public static string QuantizationCsv(KvAnalysis a)
    {
        var sb = new StringBuilder("layer,bits,k_error,v_error\n");
        foreach (var l in a.Layers)
        {
            foreach (var q in l.Quantization)
            {
                Row(sb, l.Layer, q.Bits, q.K, q.V);
            }
        }

        return sb.ToString();
    }

    /// <summary>Per run and layer: attention and residual relative error, with the run's KL divergences.</summary>
    public static string PropagationCsv(KvAnalysis a)
    {
        var sb = new StringBuilder("bits,quantized,layer,attention_error,residual_error,kl_mean,kl_last,top1_agreement\n");
        foreach (var p in a.Propagation)
        {
            for (int l = 0; l < p.ResidualError.Length; l++)
            {
                Row(sb, p.Bits, p.Quantized, l, p.AttentionError[l], p.ResidualError[l], p.KlMean, p.KlLast, p.Top1Agreement);
            }
        }

        return sb.ToString();
    }

    private static IEnumerable<(string Name, HeadSpectra Spectra)> Tensors(LayerAnalysis l) => [("k", l.K), ("k_pre_rope", l.KPreRope), ("v", l.V)];

    private static void Row(StringBuilder sb, params object[] cells)
    {
        for (int i = 0; i < cells.Length; i++)
        {
            if (i > 0)
            {
                sb.Append(',');
            }

            sb.Append(cells[i] switch
            {
                double d => d.ToString("R", CultureInfo.InvariantCulture),
                IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
                var o => o.ToString(),
            });
        }

        sb.Append('\n');
    }
}
