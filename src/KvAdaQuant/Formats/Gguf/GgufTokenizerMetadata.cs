namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// The tokenizer of a GGUF model as its metadata holds it: the <c>tokenizer.*</c> key/values (<c>tokenizer.ggml.model</c>,
/// <c>.tokens</c>, <c>.scores</c>, <c>.token_type</c>, <c>.merges</c>, <c>.pre</c>, special ids, <c>tokenizer.chat_template</c>, ...),
/// in order and with their GGUF types, so that copying them from one file to another is byte-exact.
/// </summary>
public sealed class GgufTokenizerMetadata
{
    /// <summary>Prefix every key must carry.</summary>
    public const string KeyPrefix = "tokenizer.";

    private readonly List<(string Key, GgufValueType Type, GgufValueType ElementType, object Value)> _entries = [];
    private readonly Dictionary<string, object> _values = new(StringComparer.Ordinal);

    /// <summary>Creates an empty set of keys; <paramref name="source"/> names where they came from (for messages).</summary>
    public GgufTokenizerMetadata(string source)
    {
        Source = source;
    }

    /// <summary>The file the tokenizer came from.</summary>
    public string Source { get; }

    /// <summary>Values by key (as <see cref="GgufFile.Metadata"/> holds them).</summary>
    public IReadOnlyDictionary<string, object> Values => _values;

    /// <summary>Keys in the order they are written.</summary>
    public IEnumerable<string> Keys => _entries.Select(e => e.Key);

    /// <summary><c>tokenizer.ggml.model</c> (llama, gpt2, ...), or null.</summary>
    public string? Model => _values.GetValueOrDefault("tokenizer.ggml.model") as string;

    /// <summary>Number of entries of <c>tokenizer.ggml.tokens</c> (0 when absent).</summary>
    public int TokenCount => (_values.GetValueOrDefault("tokenizer.ggml.tokens") as string[])?.Length ?? 0;

    /// <summary>
    /// Every <c>tokenizer.*</c> key of <paramref name="file"/>, in file order, or null when the file has no tokenizer
    /// (<c>tokenizer.ggml.model</c> missing).
    /// </summary>
    public static GgufTokenizerMetadata? FromGguf(GgufFile file)
    {
        if (file.GetString("tokenizer.ggml.model") is null)
        {
            return null;
        }

        var m = new GgufTokenizerMetadata(file.Path);
        foreach (var key in file.MetadataKeys.Where(k => k.StartsWith(KeyPrefix, StringComparison.Ordinal)))
        {
            var type = file.MetadataTypes[key];
            if (type == GgufValueType.Array && file.ArrayElementTypes[key] == GgufValueType.Array)
            {
                throw new ModelFormatException(file.Path, $"metadata '{key}' is an array of arrays, which kvaq cannot carry over");
            }

            m.SetValue(key, type, file.Metadata[key], type == GgufValueType.Array ? file.ArrayElementTypes[key] : default);
        }

        return m;
    }

    /// <summary>Sets a string.</summary>
    public GgufTokenizerMetadata Set(string key, string value) => SetValue(key, GgufValueType.String, value);

    /// <summary>Sets a uint32.</summary>
    public GgufTokenizerMetadata Set(string key, uint value) => SetValue(key, GgufValueType.UInt32, value);

    /// <summary>Sets a bool.</summary>
    public GgufTokenizerMetadata Set(string key, bool value) => SetValue(key, GgufValueType.Bool, value);

    /// <summary>Sets an array of strings.</summary>
    public GgufTokenizerMetadata Set(string key, string[] values) => SetValue(key, GgufValueType.Array, values, GgufValueType.String);

    /// <summary>Sets an array of float32.</summary>
    public GgufTokenizerMetadata Set(string key, float[] values) => SetValue(key, GgufValueType.Array, values, GgufValueType.Float32);

    /// <summary>Sets an array of int32.</summary>
    public GgufTokenizerMetadata Set(string key, int[] values) => SetValue(key, GgufValueType.Array, values, GgufValueType.Int32);

    /// <summary>Sets a value of any type (see <see cref="GgufWriter.SetValue"/>); a key set again is replaced in place.</summary>
    public GgufTokenizerMetadata SetValue(string key, GgufValueType type, object value, GgufValueType elementType = default)
    {
        if (!key.StartsWith(KeyPrefix, StringComparison.Ordinal))
        {
            throw new ArgumentException($"tokenizer metadata key '{key}' must start with '{KeyPrefix}'", nameof(key));
        }

        var entry = (key, type, elementType, value);
        int at = _entries.FindIndex(e => e.Key == key);
        if (at >= 0)
        {
            _entries[at] = entry;
        }
        else
        {
            _entries.Add(entry);
        }

        _values[key] = value;
        return this;
    }

    /// <summary>Writes every key to <paramref name="writer"/>, in order.</summary>
    public void WriteTo(GgufWriter writer)
    {
        foreach (var (key, type, elementType, value) in _entries)
        {
            writer.SetValue(key, type, value, elementType);
        }
    }
}
