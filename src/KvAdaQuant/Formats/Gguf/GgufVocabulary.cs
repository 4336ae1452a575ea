using System.Buffers.Binary;
using System.Text;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// A SentencePiece-style vocabulary as GGUF stores it for <c>tokenizer.ggml.model = llama</c>: pieces with
/// spaces written as U+2581 '▁', a score per piece (merge priority) and a token type per piece.
/// </summary>
public sealed class GgufVocabulary
{
    /// <summary>SentencePiece's visible space, U+2581.</summary>
    public const char SpaceMarker = '\u2581';

    private GgufVocabulary(string[] tokens, float[] scores, GgufTokenType[] types)
    {
        Tokens = tokens;
        Scores = scores;
        Types = types;
    }

    /// <summary>Pieces.</summary>
    public string[] Tokens { get; }

    /// <summary>Scores.</summary>
    public float[] Scores { get; }

    /// <summary>Token types.</summary>
    public GgufTokenType[] Types { get; }

    /// <summary>Number of tokens.</summary>
    public int Count => Tokens.Length;

    /// <summary>Unknown token id (0).</summary>
    public int UnknownToken => 0;

    /// <summary>BOS id (1).</summary>
    public int BosToken => 1;

    /// <summary>EOS id (2).</summary>
    public int EosToken => 2;

    /// <summary>
    /// Reads a llama2.c <c>tokenizer.bin</c> with <paramref name="vocabSize"/> entries and converts it as
    /// llama.cpp's convert-llama2c-to-ggml does: id 0 becomes <c>&lt;unk&gt;</c> (UNKNOWN), 1 <c>&lt;s&gt;</c> and
    /// 2 <c>&lt;/s&gt;</c> (CONTROL), <c>&lt;0xXX&gt;</c> pieces are BYTE, empty pieces CONTROL, the rest NORMAL with
    /// spaces replaced by '▁'. Scores are kept.
    /// </summary>
    public static GgufVocabulary FromLlama2cTokenizer(string path, int vocabSize)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: tokenizer file not found", path);
        }

        var data = File.ReadAllBytes(path);
        if (vocabSize is <= 3 or > 1 << 22)
        {
            throw new ModelFormatException(path, $"vocabulary size {vocabSize} is out of range");
        }

        var tokens = new string[vocabSize];
        var scores = new float[vocabSize];
        var types = new GgufTokenType[vocabSize];
        int off = 4;
        for (int i = 0; i < vocabSize; i++)
        {
            if (off + 8 > data.Length)
            {
                throw new ModelFormatException(path, $"tokenizer ends after {i} tokens but the model has a vocabulary of {vocabSize}");
            }

            scores[i] = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(off));
            int len = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(off + 4));
            off += 8;
            if (len < 0 || off + len > data.Length)
            {
                throw new ModelFormatException(path, $"token {i}: length {len} runs past the end of the file");
            }

            var text = Encoding.UTF8.GetString(data, off, len);
            off += len;
            (tokens[i], types[i]) = i switch
            {
                0 => ("<unk>", GgufTokenType.Unknown),
                1 => ("<s>", GgufTokenType.Control),
                2 => ("</s>", GgufTokenType.Control),
                _ when text.Length == 0 => (text, GgufTokenType.Control),
                _ when IsByteToken(text) => (text, GgufTokenType.Byte),
                _ => (text.Replace(' ', SpaceMarker), GgufTokenType.Normal),
            };
        }

        if (off != data.Length)
        {
            throw new ModelFormatException(path, $"tokenizer holds more than the model's {vocabSize} tokens ({data.Length - off} bytes left over): tokenizer and model vocabularies disagree");
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < vocabSize; i++)
        {
            if (!seen.Add(tokens[i]))
            {
                throw new ModelFormatException(path, $"token {i} '{tokens[i]}' appears twice; llama.cpp needs unique pieces");
            }
        }

        return new GgufVocabulary(tokens, scores, types);
    }

    /// <summary>
    /// A generated vocabulary of exactly <paramref name="size"/> (at least 259) unique pieces that llama.cpp
    /// accepts: <c>&lt;unk&gt;</c>, <c>&lt;s&gt;</c>, <c>&lt;/s&gt;</c>, the 256 byte tokens <c>&lt;0x00&gt;</c>..<c>&lt;0xFF&gt;</c> (ids 3..258,
    /// as in Llama 2), then '▁', printable ASCII characters, and lowercase strings of growing length, each
    /// also with a leading '▁'. Scores fall with the id, so shorter pieces merge first.
    /// </summary>
    public static GgufVocabulary Synthetic(int size)
    {
        if (size is < 259 or > 1 << 22)
        {
            throw new ArgumentOutOfRangeException(nameof(size), $"a synthetic vocabulary needs 259..4194304 tokens, got {size}");
        }

        var tokens = new List<string>(size) { "<unk>", "<s>", "</s>" };
        var types = new List<GgufTokenType>(size) { GgufTokenType.Unknown, GgufTokenType.Control, GgufTokenType.Control };
        for (int b = 0; b < 256; b++)
        {
            tokens.Add($"<0x{b:X2}>");
            types.Add(GgufTokenType.Byte);
        }

        foreach (var piece in GeneratedPieces())
        {
            if (tokens.Count == size)
            {
                break;
            }

            tokens.Add(piece);
            types.Add(GgufTokenType.Normal);
        }

        var scores = new float[size];
        for (int i = 259; i < size; i++)
        {
            scores[i] = -(i - 259);
        }

        return new GgufVocabulary([.. tokens], scores, [.. types]);
    }

    /// <summary>Writes the <c>tokenizer.ggml.*</c> keys.</summary>
    public void WriteTo(GgufWriter writer) => ToMetadata("vocabulary").WriteTo(writer);

    /// <summary>The <c>tokenizer.ggml.*</c> keys of this vocabulary; <paramref name="source"/> names where it came from.</summary>
    public GgufTokenizerMetadata ToMetadata(string source) => new GgufTokenizerMetadata(source)
        .Set("tokenizer.ggml.model", "llama")
        .Set("tokenizer.ggml.tokens", Tokens)
        .Set("tokenizer.ggml.scores", Scores)
        .Set("tokenizer.ggml.token_type", Types.Select(t => (int)t).ToArray())
        .Set("tokenizer.ggml.unknown_token_id", (uint)UnknownToken)
        .Set("tokenizer.ggml.bos_token_id", (uint)BosToken)
        .Set("tokenizer.ggml.eos_token_id", (uint)EosToken)
        .Set("tokenizer.ggml.add_bos_token", true)
        .Set("tokenizer.ggml.add_eos_token", false);

    private static bool IsByteToken(string s) => s.Length == 6 && s.StartsWith("<0x", StringComparison.Ordinal) && s[5] == '>'
        && Uri.IsHexDigit(s[3]) && Uri.IsHexDigit(s[4]);

    private static IEnumerable<string> GeneratedPieces()
    {
        yield return SpaceMarker.ToString();
        for (char c = '!'; c <= '~'; c++)
        {
            yield return c.ToString();
        }

        for (char c = 'a'; c <= 'z'; c++)
        {
            yield return SpaceMarker + c.ToString();
        }

        // Lowercase strings of length 2, 3, ... in order, each bare and with a leading '▁'.
        for (int length = 2; ; length++)
        {
            var digits = new int[length];
            var chars = new char[length];
            while (true)
            {
                for (int i = 0; i < length; i++)
                {
                    chars[i] = (char)('a' + digits[i]);
                }

                var s = new string(chars);
                yield return s;
                yield return SpaceMarker + s;
                int k = length - 1;
                while (k >= 0 && ++digits[k] == 26)
                {
                    digits[k--] = 0;
                }

                if (k < 0)
                {
                    break;
                }
            }
        }
    }
}
