using System.Text.Json;

namespace KvAdaQuant.Evaluation.Datasets;

/// <summary>Reads a JSON Lines file record by record, with errors naming the file and line.</summary>
internal static class JsonLines
{
    /// <summary>Each non-blank line parsed, with its 1-based line number.</summary>
    public static IEnumerable<(JsonElement Record, int Line)> Read(string path)
    {
        CheckFile(path);
        int lineNo = 0;
        int count = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            JsonElement e;
            try
            {
                using var doc = JsonDocument.Parse(line);
                e = doc.RootElement.Clone();
            }
            catch (JsonException ex)
            {
                throw new DatasetFormatException($"{path}:{lineNo}: not valid JSON ({ex.Message})");
            }

            if (e.ValueKind != JsonValueKind.Object)
            {
                throw new DatasetFormatException($"{path}:{lineNo}: expected a JSON object, found {e.ValueKind}");
            }

            if (Formats.JsonText.LoneSurrogate(e) is { } at)
            {
                throw new DatasetFormatException($"{path}:{lineNo}: the string at {at} {Formats.JsonText.LoneSurrogateProblem}");
            }

            count++;
            yield return (e, lineNo);
        }

        if (count == 0)
        {
            throw new DatasetFormatException($"{path}: no records (the file is empty)");
        }
    }

    /// <summary>Throws unless <paramref name="path"/> exists.</summary>
    public static void CheckFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: dataset file not found", path);
        }
    }

    /// <summary>A required string field.</summary>
    public static string String(JsonElement e, string field, string path, int line)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind != JsonValueKind.String)
        {
            throw new DatasetFormatException($"{path}:{line}: field \"{field}\" is missing or not a string");
        }

        return v.GetString()!;
    }

    /// <summary>A required object field.</summary>
    public static JsonElement Property(JsonElement e, string field, JsonValueKind kind, string path, int line)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind != kind)
        {
            throw new DatasetFormatException($"{path}:{line}: field \"{field}\" is missing or not {kind}");
        }

        return v;
    }
}
