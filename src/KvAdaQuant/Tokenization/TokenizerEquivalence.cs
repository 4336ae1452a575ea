using System.Text;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// Checks that a converted tokenizer behaves like the one it was converted from: the same BOS/EOS ids, the same
/// vocabulary (tokens only one side has, padding at the end, print nothing), the same bytes for every token, and the same ids for a fixed sample of texts (English prose, whitespace runs,
/// digits, punctuation, contractions, code, several scripts, emoji) and for the text of every token on its own and after
/// a letter. A finite sample, not a proof: conversions whose rules are equivalent by construction pass it, and a
/// conversion that changes tokenization on any of these inputs is refused instead of written.
/// </summary>
public static class TokenizerEquivalence
{
    /// <summary>The fixed texts every check encodes.</summary>
    public static IReadOnlyList<string> Sample { get; } =
    [
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog, Max.",
        "Hello world", " leading space", "trailing space ", "  two leading spaces", "multiple   spaces\tand\ttabs\nnew line\n\n\nthree newlines \n ",
        "1 12 123 1234 12345 3.14159 -42 1,000,000 2024-01-31", "!@#$%^&*()_+-=[]{};':\",./<>?`~\\|",
        "can't won't I'm you're they've we'll he'd IT'S CAN'T", "CamelCaseWords snake_case_words kebab-case-words ALLCAPS",
        "def f(x):\n    return x ** 2  # square\n\tif x: pass", "naïve café — “quotes” ‘single’ … ñ ü ß ø", "日本語のテキスト 中文文本 한국어 텍스트",
        "Ελληνικά русский текст العربية עברית हिन्दी ไทย", "emoji 🦙🚀 👍🏽 👨‍👩‍👧 🇫🇷", "\u00a0non-breaking\u2009thin\u3000ideographic space", "a",
        " ", "\n", string.Empty,
    ];

    /// <summary>
    /// Throws <see cref="InvalidDataException"/> naming <paramref name="what"/> and the first difference when
    /// <paramref name="converted"/> does not behave like <paramref name="original"/>. Tokens in
    /// <paramref name="printedDifferently"/> may decode to other text (llama2.c's tokenizer prints its special tokens,
    /// <c>&lt;unk&gt;</c> and <c>\n&lt;s&gt;\n</c>, where llama.cpp's prints nothing); everything else is compared.
    /// </summary>
    public static void Verify(ITokenizer original, ITokenizer converted, string what, IReadOnlySet<int>? printedDifferently = null)
    {
        if (original.BosToken != converted.BosToken || original.EosToken != converted.EosToken)
        {
            throw new InvalidDataException($"{what}: the converted tokenizer has BOS {converted.BosToken} and EOS {converted.EosToken}; the original {original.BosToken} and {original.EosToken}");
        }

        // Ids only one side has (padding up to the model's vocabulary, unused slots left out) must print nothing.
        var longer = original.VocabSize >= converted.VocabSize ? original : converted;
        int common = Math.Min(original.VocabSize, converted.VocabSize);
        for (int id = common; id < longer.VocabSize; id++)
        {
            if (longer.DecodeBytes(-1, id).Length != 0)
            {
                throw new InvalidDataException($"{what}: token {id} decodes to text in the {(ReferenceEquals(longer, original) ? "original" : "converted")} tokenizer but the other has only {common} tokens");
            }
        }

        var texts = new List<string>(Sample);
        var strict = new UTF8Encoding(false, throwOnInvalidBytes: true);
        for (int id = 0; id < common; id++)
        {
            var a = original.DecodeBytes(-1, id);
            var b = converted.DecodeBytes(-1, id);
            if (!a.AsSpan().SequenceEqual(b) && printedDifferently?.Contains(id) != true)
            {
                throw new InvalidDataException($"{what}: token {id} decodes to [{Convert.ToHexString(b)}] after conversion but to [{Convert.ToHexString(a)}] before");
            }

            try
            {
                var s = strict.GetString(a);
                if (s.Length > 0)
                {
                    texts.Add(s);
                    texts.Add("a" + s);
                }
            }
            catch (DecoderFallbackException)
            {
                // a partial UTF-8 sequence (byte token) is no text of its own
            }
        }

        foreach (var text in texts)
        {
            var a = original.Encode(text, addBos: true);
            var b = converted.Encode(text, addBos: true);
            if (!a.SequenceEqual(b))
            {
                throw new InvalidDataException($"{what}: '{text.ReplaceLineEndings("\\n")}' encodes to [{string.Join(' ', b)}] after conversion but to [{string.Join(' ', a)}] before");
            }
        }
    }
}
