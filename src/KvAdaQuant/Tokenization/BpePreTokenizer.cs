using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// Splits text into words before BPE with a sequence of regular expressions, as llama.cpp's
/// <c>unicode_regex_split</c> does: each expression cuts every piece from the previous one into its matches and
/// the unmatched gaps between them (gaps are kept as pieces). Matching runs on a copy of the text in which
/// every code point outside the BMP is replaced by one BMP character of the same Unicode category, so
/// <c>\p{L}</c>, <c>\p{N}</c>, <c>\s</c> and friends see one character per code point, like the
/// Rust/Python regex engines the patterns were written for.
/// </summary>
public sealed class BpePreTokenizer
{
    /// <summary>GPT-2's pattern as llama.cpp uses it (gaps stand in for the final <c>\s+</c>).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

    /// <summary>Llama 3's pattern (case-insensitive contractions spelt out).</summary>
    public const string Llama3Pattern = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2's pattern: Llama 3's with single digits.</summary>
    public const string Qwen2Pattern = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private static readonly char[] CategoryStandIn = BuildStandIns();

    private readonly Regex[] _patterns;
    private readonly string[] _sources;
    private readonly bool _collapse;

    /// <summary>Creates a pre-tokenizer from <paramref name="patterns"/>, applied in order.</summary>
    public BpePreTokenizer(string name, params string[] patterns)
    {
        Name = name;
        _sources = [.. patterns];
        _patterns = patterns.Select(p => new Regex(p, RegexOptions.CultureInvariant)).ToArray();

        // Patterns that name only ASCII characters can run on the category-collapsed text; others
        // (e.g. explicit CJK ranges) run on the text itself.
        _collapse = patterns.All(p => p.All(c => c < 128));
    }

    /// <summary>The regular expressions, in the order they are applied.</summary>
    public IReadOnlyList<string> Patterns => _sources;

    /// <summary>Name of the scheme (the GGUF <c>tokenizer.ggml.pre</c> value or "tokenizer.json").</summary>
    public string Name { get; }

    /// <summary>
    /// The pre-tokenizer for a GGUF <c>tokenizer.ggml.pre</c> value, and whether llama.cpp sets
    /// <c>ignore_merges</c> for it (a word that is itself a token is emitted whole); null when unknown.
    /// </summary>
    public static (BpePreTokenizer PreTokenizer, bool IgnoreMerges)? ForGgufPre(string? pre) => pre switch
    {
        null or "" or "default" => (new BpePreTokenizer("default", @"[\p{P}\$\+<=>\^~\|]+", Gpt2Pattern, @"\p{N}+", "[0-9][0-9][0-9]"), false),
        "gpt-2" or "phi-2" or "mpt" or "olmo" or "jina-es" or "jina-de" or "jina-v2-es" or "jina-v2-de" or "roberta-bpe" => (new BpePreTokenizer(pre, Gpt2Pattern), false),
        "llama3" or "llama-v3" or "llama-bpe" or "falcon3" or "smaug-bpe" or "dbrx" => (new BpePreTokenizer(pre, Llama3Pattern), pre is "llama3" or "llama-v3" or "llama-bpe" or "falcon3"),
        "qwen2" or "deepseek-r1-qwen" or "stablelm2" or "megrez" => (new BpePreTokenizer(pre, Qwen2Pattern), false),
        "smollm" or "starcoder" or "refact" or "codeshell" or "command-r" or "exaone" => (new BpePreTokenizer(pre, @"\p{N}", Gpt2Pattern), false),
        _ => null,
    };

    /// <summary>Splits <paramref name="text"/> into pre-tokenized words.</summary>
    public List<string> Split(string text)
    {
        var words = new List<string>();
        if (text.Length == 0)
        {
            return words;
        }

        // work: the string the regexes see; origin[i]: where work char i starts in text (origin[work.Length] = text.Length).
        string work;
        int[] origin;
        if (_collapse)
        {
            var sb = new StringBuilder(text.Length);
            var starts = new List<int>(text.Length + 1);
            for (int i = 0; i < text.Length;)
            {
                Rune.DecodeFromUtf16(text.AsSpan(i), out var r, out int consumed);
                starts.Add(i);
                sb.Append(r.IsBmp ? (char)r.Value : CategoryStandIn[(int)Rune.GetUnicodeCategory(r)]);
                i += consumed;
            }

            starts.Add(text.Length);
            work = sb.ToString();
            origin = starts.ToArray();
        }
        else
        {
            work = text;
            origin = Enumerable.Range(0, text.Length + 1).ToArray();
        }

        var lengths = new List<int> { work.Length };
        foreach (var regex in _patterns)
        {
            var next = new List<int>(lengths.Count * 2);
            int start = 0;
            foreach (int length in lengths)
            {
                int at = start;
                for (var m = regex.Match(work, start, length); m.Success; m = m.NextMatch())
                {
                    if (m.Length == 0)
                    {
                        continue;
                    }

                    if (m.Index > at)
                    {
                        next.Add(m.Index - at);
                    }

                    next.Add(m.Length);
                    at = m.Index + m.Length;
                }

                if (at < start + length)
                {
                    next.Add(start + length - at);
                }

                start += length;
            }

            lengths = next;
        }

        int pos = 0;
        foreach (int length in lengths)
        {
            words.Add(text[origin[pos]..origin[pos + length]]);
            pos += length;
        }

        return words;
    }

    private static char[] BuildStandIns()
    {
        // For each Unicode category, the first BMP character above ASCII that has it.
        var standIn = new char[32];
        for (int c = 0x80; c <= 0xFFFF; c++)
        {
            if (c is >= 0xD800 and <= 0xDFFF)
            {
                continue;
            }

            int cat = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (standIn[cat] == '\0')
            {
                standIn[cat] = (char)c;
            }
        }

        for (int i = 0; i < standIn.Length; i++)
        {
            if (standIn[i] == '\0')
            {
                standIn[i] = '\uE000'; // private use: matches no letter, number or space class
            }
        }

        return standIn;
    }
}
