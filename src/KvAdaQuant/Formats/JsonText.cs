using System.Text.Json;

namespace KvAdaQuant.Formats;

/// <summary>Checks on JSON read from files and requests that <see cref="JsonDocument"/> accepts but cannot give as text.</summary>
public static class JsonText
{
    /// <summary>What <see cref="LoneSurrogate"/> finds, worded for an error message after "the string at PATH".</summary>
    public const string LoneSurrogateProblem = "escapes half of a UTF-16 surrogate pair (\\uD800-\\uDFFF without its other half), which is no text";

    /// <summary>
    /// The JSON path (from <paramref name="path"/>, <c>$</c> for the root) of the first string or property name in
    /// <paramref name="e"/> that escapes a lone UTF-16 surrogate (<c>"\ud800"</c>): valid JSON, but reading it as a string
    /// throws <see cref="InvalidOperationException"/>; null when there is none.
    /// </summary>
    public static string? LoneSurrogate(JsonElement e, string path = "$")
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                return Readable(e) ? null : path;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in e.EnumerateArray())
                {
                    if (LoneSurrogate(item, $"{path}[{i++}]") is { } at)
                    {
                        return at;
                    }
                }

                return null;
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    string name;
                    try
                    {
                        name = p.Name;
                    }
                    catch (InvalidOperationException)
                    {
                        return $"{path} (a property name)";
                    }

                    if (LoneSurrogate(p.Value, $"{path}.{name}") is { } at)
                    {
                        return at;
                    }
                }

                return null;
            default:
                return null;
        }

        static bool Readable(JsonElement s)
        {
            try
            {
                _ = s.GetString();
                return true;
            }
            catch (InvalidOperationException)
            {
                return false;
            }
        }
    }
}
