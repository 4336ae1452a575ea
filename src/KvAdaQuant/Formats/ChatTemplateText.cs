using System.Text.Json;
using KvAdaQuant.Formats.Gguf;

namespace KvAdaQuant.Formats;

/// <summary>
/// A model's Jinja chat template, where it keeps one: GGUF <c>tokenizer.chat_template</c>, or <c>chat_template</c> in the
/// <c>tokenizer_config.json</c> of a Hugging Face folder (a string, or the list of named templates transformers also
/// accepts, of which <c>default</c> is taken). llama2.c files have none.
/// </summary>
public static class ChatTemplateText
{
    /// <summary>
    /// The template for a model at <paramref name="modelPath"/> (a resolved file or folder) run with
    /// <paramref name="tokenizerPath"/> (or null: the model's own): the tokenizer file's when it is a GGUF or a
    /// <c>tokenizer.json</c>, else the model's; null when there is none.
    /// </summary>
    public static string? Read(string modelPath, string? tokenizerPath)
    {
        if (tokenizerPath is not null)
        {
            return FromFile(tokenizerPath, Path.GetFileName(tokenizerPath).EndsWith(".json", StringComparison.OrdinalIgnoreCase)
                ? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerPath))!, "tokenizer_config.json")
                : null);
        }

        return Directory.Exists(modelPath)
            ? FromConfig(Path.Combine(modelPath, "tokenizer_config.json"))
            : FromFile(modelPath, null);
    }

    private static string? FromFile(string path, string? config)
    {
        if (config is not null)
        {
            return FromConfig(config);
        }

        if (!GgufFile.IsGgufFile(path))
        {
            return null;
        }

        using var g = GgufFile.Open(path);
        return g.Metadata.GetValueOrDefault("tokenizer.chat_template") as string;
    }

    private static string? FromConfig(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("chat_template", out var t))
            {
                return null;
            }

            if (JsonText.LoneSurrogate(t, "$.chat_template") is { } at)
            {
                throw new ModelFormatException(path, $"the string at {at} {JsonText.LoneSurrogateProblem}");
            }

            if (t.ValueKind == JsonValueKind.String)
            {
                return t.GetString();
            }

            if (t.ValueKind == JsonValueKind.Array)
            {
                foreach (var named in t.EnumerateArray())
                {
                    if (named.ValueKind == JsonValueKind.Object && named.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String
                        && n.GetString() == "default" && named.TryGetProperty("template", out var body) && body.ValueKind == JsonValueKind.String)
                    {
                        return body.GetString();
                    }
                }
            }

            return null;
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}");
        }
    }
}
