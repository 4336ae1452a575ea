using System.Text.Json;

namespace KvAdaQuant.Allocation;

/// <summary>
/// Reads per-layer K/V norms for the allocators from either of two files:
/// <list type="bullet">
/// <item>the reference implementation's published norms (<c>{"w_k": [...], "w_v": [...]}</c>, one number per layer; the
/// file itself is either Frobenius or spectral, so <c>score</c> is not consulted and the source is always the weights);</item>
/// <item>our <c>analysis.json</c> (<c>layers[i].k</c>, <c>.v</c>, <c>.w_k</c>, <c>.w_v</c>, each with <c>frobenius</c> and
/// <c>spectral</c>, a number or a list over KV heads; <c>whole_frobenius</c> / <c>whole_spectral</c>, where present as for the
/// weights, are the whole matrix's norms and take precedence). A per-head list is combined into the layer's norm: Frobenius as
/// the root of the sum of squares (exact), spectral as the maximum over heads (a lower bound of the spectral norm of the
/// concatenated heads).</item>
/// </list>
/// </summary>
public static class LayerNormsReader
{
    /// <summary>Reads <paramref name="path"/>.</summary>
    public static LayerNorms Read(string path, NormScore score, NormSource source)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"--stats {path}: file not found", path);
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"--stats {path}: not valid JSON ({e.Message})");
        }

        using (doc)
        {
            if (Formats.JsonText.LoneSurrogate(doc.RootElement) is { } at)
            {
                throw new InvalidDataException($"--stats {path}: the string at {at} {Formats.JsonText.LoneSurrogateProblem}");
            }

            return Parse(doc.RootElement, path, score, source);
        }
    }

    /// <summary>Parses an already loaded document; <paramref name="name"/> names it in errors.</summary>
    public static LayerNorms Parse(JsonElement root, string name, NormScore score, NormSource source)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"--stats {name}: expected a JSON object");
        }

        if (root.TryGetProperty("w_k", out var wk) && root.TryGetProperty("w_v", out var wv))
        {
            return new LayerNorms(Numbers(wk, name, "w_k"), Numbers(wv, name, "w_v"), $"{name} (reference weight norms w_k/w_v)");
        }

        if (!root.TryGetProperty("layers", out var layers) || layers.ValueKind != JsonValueKind.Array || layers.GetArrayLength() == 0)
        {
            throw new InvalidDataException($"--stats {name}: expected either \"w_k\"/\"w_v\" lists (reference norms) or a non-empty \"layers\" list (analysis.json)");
        }

        string kField = source == NormSource.Weights ? "w_k" : "k";
        string vField = source == NormSource.Weights ? "w_v" : "v";
        string scoreField = score == NormScore.Frobenius ? "frobenius" : "spectral";
        var ks = new List<double>();
        var vs = new List<double>();
        int i = 0;
        foreach (var layer in layers.EnumerateArray())
        {
            ks.Add(LayerNorm(layer, name, i, kField, scoreField, score));
            vs.Add(LayerNorm(layer, name, i, vField, scoreField, score));
            i++;
        }

        return new LayerNorms(ks, vs, $"{name} (layers[].{kField}/{vField}.{scoreField})");
    }

    private static double LayerNorm(JsonElement layer, string name, int i, string field, string scoreField, NormScore score)
    {
        string where = $"--stats {name}: layers[{i}].{field}.{scoreField}";
        if (layer.ValueKind != JsonValueKind.Object || !layer.TryGetProperty(field, out var t) || t.ValueKind != JsonValueKind.Object || !t.TryGetProperty(scoreField, out var v))
        {
            throw new InvalidDataException($"{where} is missing");
        }

        if (t.TryGetProperty("whole_" + scoreField, out var whole))
        {
            return Norm(whole, name, $"layers[{i}].{field}.whole_{scoreField}");
        }

        if (v.ValueKind == JsonValueKind.Number)
        {
            return Norm(v, name, $"layers[{i}].{field}.{scoreField}");
        }

        var heads = Numbers(v, name, $"layers[{i}].{field}.{scoreField}");
        return score == NormScore.Frobenius ? Math.Sqrt(heads.Sum(h => h * h)) : heads.Max();
    }

    private static List<double> Numbers(JsonElement e, string name, string field)
    {
        if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0)
        {
            throw new InvalidDataException($"--stats {name}: \"{field}\" must be a non-empty list of numbers");
        }

        var list = new List<double>();
        foreach (var x in e.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number)
            {
                throw new InvalidDataException($"--stats {name}: \"{field}\" holds {x.ValueKind}, expected numbers");
            }

            list.Add(Norm(x, name, $"{field}[{list.Count}]"));
        }

        return list;
    }

    /// <summary>A norm: a finite number >= 0, else an error naming the file and the field.</summary>
    private static double Norm(JsonElement x, string name, string field)
    {
        if (x.ValueKind != JsonValueKind.Number)
        {
            throw new InvalidDataException($"--stats {name}: {field} is {x.ValueKind}, expected a number");
        }

        if (!x.TryGetDouble(out double d) || !double.IsFinite(d) || d < 0)
        {
            throw new InvalidDataException($"--stats {name}: {field} is {x.GetRawText()}; norms must be finite and non-negative");
        }

        return d;
    }
}
