using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// Builds the tokenizer a GGUF file describes in its <c>tokenizer.ggml.*</c> metadata:
/// <c>llama</c> → <see cref="SentencePieceBpeTokenizer"/>, <c>gpt2</c> → byte-level <see cref="MergesBpeTokenizer"/>
/// with the pre-tokenizer named by <c>tokenizer.ggml.pre</c>.
/// </summary>
public static class GgufTokenizerFactory
{
    /// <summary>Creates the tokenizer of <paramref name="file"/>; throws <see cref="ModelFormatException"/> naming the file and key when the metadata is missing or wrong.</summary>
    public static ITokenizer Create(GgufFile file) => Create(file.Path, file.Metadata);

    /// <summary>Creates the tokenizer that <paramref name="metadata"/> (GGUF <c>tokenizer.*</c> keys) describes.</summary>
    public static ITokenizer Create(GgufTokenizerMetadata metadata) => Create(metadata.Source, metadata.Values);

    /// <summary>
    /// Creates the tokenizer described by GGUF metadata <paramref name="metadata"/> read from <paramref name="path"/>; throws
    /// <see cref="ModelFormatException"/> naming the file and key when the metadata is missing or wrong.
    /// </summary>
    public static ITokenizer Create(string path, IReadOnlyDictionary<string, object> metadata)
    {
        var file = new Metadata(path, metadata);
        var model = file.GetString("tokenizer.ggml.model")
            ?? throw new ModelFormatException(file.Path, "no tokenizer: metadata 'tokenizer.ggml.model' is missing");
        var tokens = Array<string>(file, "tokenizer.ggml.tokens", required: true)!;
        if (tokens.Length == 0)
        {
            throw new ModelFormatException(file.Path, "metadata 'tokenizer.ggml.tokens' is empty");
        }

        var rawTypes = Array<int>(file, "tokenizer.ggml.token_type", required: false);
        if (rawTypes is not null && rawTypes.Length < tokens.Length)
        {
            throw new ModelFormatException(file.Path, $"metadata 'tokenizer.ggml.token_type' has {rawTypes.Length} entries for {tokens.Length} tokens");
        }

        var types = rawTypes?.Take(tokens.Length).Select(t => t is >= 0 and <= 6 ? (TokenType)t : TokenType.Undefined).ToArray();
        int Id(string key, int fallback)
        {
            long? v = file.GetInteger(key);
            if (v is null)
            {
                return fallback < tokens.Length ? fallback : -1;
            }

            if (v < 0 || v >= tokens.Length)
            {
                throw new ModelFormatException(file.Path, $"metadata '{key}' = {v} is outside the vocabulary of {tokens.Length} tokens");
            }

            return (int)v;
        }

        switch (model)
        {
            case "llama":
                {
                    var scores = Array<float>(file, "tokenizer.ggml.scores", required: false) ?? new float[tokens.Length];
                    if (scores.Length < tokens.Length)
                    {
                        throw new ModelFormatException(file.Path, $"metadata 'tokenizer.ggml.scores' has {scores.Length} entries for {tokens.Length} tokens");
                    }

                    bool addSpacePrefix = file.Get("tokenizer.ggml.add_space_prefix") as bool? ?? true;
                    return new SentencePieceBpeTokenizer(file.Path, tokens, scores[..tokens.Length], types, Id("tokenizer.ggml.bos_token_id", 1), Id("tokenizer.ggml.eos_token_id", 2), addSpacePrefix);
                }

            case "gpt2":
                {
                    var merges = Array<string>(file, "tokenizer.ggml.merges", required: true)!;
                    var pre = file.GetString("tokenizer.ggml.pre");
                    var (preTokenizer, ignoreMerges) = BpePreTokenizer.ForGgufPre(pre)
                        ?? throw new ModelFormatException(file.Path, $"pre-tokenizer 'tokenizer.ggml.pre' = '{pre}' is not supported (supported: default, gpt-2, llama-bpe/llama3, qwen2, smollm, starcoder and their aliases)");
                    var options = new MergesBpeOptions
                    {
                        ByteLevel = true,
                        PreTokenizer = preTokenizer,
                        IgnoreMerges = ignoreMerges,
                        Bos = Id("tokenizer.ggml.bos_token_id", -1),
                        Eos = Id("tokenizer.ggml.eos_token_id", -1),
                        Unknown = Id("tokenizer.ggml.unknown_token_id", -1),
                    };
                    return new MergesBpeTokenizer(file.Path, tokens, types, merges, options);
                }

            default:
                throw new ModelFormatException(file.Path, $"tokenizer model 'tokenizer.ggml.model' = '{model}' is not supported (supported: llama, gpt2)");
        }
    }

    private static T[]? Array<T>(Metadata file, string key, bool required)
    {
        var v = file.Get(key);
        if (v is null)
        {
            return required ? throw new ModelFormatException(file.Path, $"metadata '{key}' is missing") : null;
        }

        if (v is T[] a)
        {
            return a;
        }

        // Integer arrays may come as another integer width.
        if (typeof(T) == typeof(int) && v is System.Array other && other.Length > 0 && other.GetValue(0) is IConvertible)
        {
            try
            {
                return other.Cast<object>().Select(o => (T)(object)Convert.ToInt32(o, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            }
            catch (Exception e) when (e is OverflowException or InvalidCastException or FormatException)
            {
            }
        }

        throw new ModelFormatException(file.Path, $"metadata '{key}' holds a {v.GetType().Name}, expected an array of {typeof(T).Name}");
    }

    /// <summary>Typed access to metadata values, with errors naming the file and key.</summary>
    private sealed record Metadata(string Path, IReadOnlyDictionary<string, object> Values)
    {
        public object? Get(string key) => Values.GetValueOrDefault(key);

        public string? GetString(string key) => Values.GetValueOrDefault(key) as string;

        public long? GetInteger(string key) => Values.GetValueOrDefault(key) is not { } v ? null
            : GgufFile.ToInteger(Path, key, v) ?? throw new ModelFormatException(Path, $"metadata '{key}' should be an integer but holds a {v.GetType().Name}");
    }
}
