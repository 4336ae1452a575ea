using System.Text;
using CsCheck;
using KvAdaQuant.Numerics;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// Our tokenizers against llama.cpp's on random text, beyond its 46 fixed test vectors: strings built from pieces
/// that stress the pre-tokenizer and the merges (runs of spaces, tabs and newlines, digits, contractions, punctuation,
/// accents, combining marks, CJK, emoji, right-to-left text, the text of special tokens) and of any Unicode scalar values,
/// for the SentencePiece
/// (llama-spm) and byte-level BPE (gpt-2) vocabularies and the llama2.c vocabulary of stories260K converted to GGUF.
/// The ids must be the same, with and without special-token parsing, and decoding them must give the text back.
/// </summary>
public class TokenizerPropertyTests(ConvertedModels converted) : IClassFixture<ConvertedModels>
{
    private static readonly string[] Pieces =
    [
        " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u3000",
        "a", "the", "The", " the", "Hello", " world", "HELLO", "x", "Q", "z",
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "n't", "don't", "I'm",
        "0", "1", "7", "12", "123", "1234", "12345", "3.14", "1,000", "-5", "+",
        ".", ",", "!", "?", "...", "--", "(", ")", "[", "]", "{", "}", "\"", "'", "`", "#", "@", "$", "%", "&", "*",
        "/", "\\", "_", "__", "=", "==", "=>", "<", ">", "|", "~", "^", ";", ":", "::",
        "é", "ü", "ñ", "ß", "Å", "e\u0301", "o\u0308", "Ω", "λ", "Ж", "ж", "Привет",
        "中", "文", "日本語", "한국어", "ภาษาไทย", "العربية", "עברית", "हिन्दी",
        "😀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "\u200b", "\u200d", "\ufeff", "𝔘",
        "<s>", "</s>", "<unk>", "<|endoftext|>", "<0x0A>", "▁", "Ġ",
        "Once upon a time", " there was a little girl", " named Lily.",
        "def f(x):\n    return x", "    ", "\t\t", "http://example.com/a?b=c",
    ];

    // A string of 0..24 pieces; a few whole strings are only whitespace, which tokenizers special-case.
    private static readonly Gen<string> Text = Gen.OneOf(
        Gen.Int[0, Pieces.Length - 1].Array[0, 24].Select(ix => string.Concat(ix.Select(i => Pieces[i]))),
        Gen.Char[' ', '~'].Array[0, 40].Select(c => new string(c)),
        Gen.Int[0, 3].Array[1, 12].Select(ix => string.Concat(ix.Select(i => new[] { " ", "\n", "\t", "a" }[i]))),
        Gen.Int[1, 0x10FFFF].Where(c => c is < 0xD800 or > 0xDFFF).Array[0, 12].Select(cs => string.Concat(cs.Select(char.ConvertFromUtf32))));

    [LlamaCppTheory]
    [InlineData("ggml-vocab-llama-spm.gguf")]
    [InlineData("ggml-vocab-gpt-2.gguf")]
    public void RandomText_EncodesAsLlamaCppDoes_AndDecodesBack(string vocab)
    {
        string path = Fixtures.Path("tokenizers", "llama.cpp-vocab", vocab);
        using var g = GgufFile.Open(path);
        CheckAgainstLlamaCpp(GgufTokenizerFactory.Create(g), path);
    }

    [LlamaCppFact]
    public void RandomText_Stories260KGguf_EncodesAsLlamaCppDoes_AndDecodesBack()
    {
        string path = converted.Get("stories260K", GgmlType.F32);
        using var g = GgufFile.Open(path);
        CheckAgainstLlamaCpp(GgufTokenizerFactory.Create(g), path);
    }

    /// <summary>
    /// The 32,000-token Llama 2 vocabulary (llama2.c's <c>tokenizer.bin</c>) written by our converter into a vocabulary-only
    /// GGUF file for llama.cpp, against our GGUF tokenizer on that file and our <c>tokenizer.json</c> tokenizer written
    /// from the same vocabulary (as <c>kvaq convert --to hf</c> does).
    /// </summary>
    [LlamaCppFact]
    public void RandomText_Llama2Vocabulary_GgufAndTokenizerJson_EncodeAsLlamaCppDoes()
    {
        using var dir = new TempDir();
        string tokBin = Fixtures.Path("tokenizers", "llama2-32k", "tokenizer.bin");
        var vocab = GgufVocabulary.FromLlama2cTokenizer(tokBin, 32000);
        string gguf = Path.Combine(dir.Path, "llama2-vocab.gguf");
        var w = new GgufWriter();
        w.Set("general.architecture", "llama");
        w.Set("llama.context_length", 4096u);
        w.Set("llama.embedding_length", 64u);
        w.Set("llama.block_count", 1u);
        w.Set("llama.feed_forward_length", 128u);
        w.Set("llama.attention.head_count", 1u);
        w.Set("llama.attention.layer_norm_rms_epsilon", 1e-5f);
        vocab.WriteTo(w);
        w.Write(gguf);

        using (var g = GgufFile.Open(gguf))
        {
            CheckAgainstLlamaCpp(GgufTokenizerFactory.Create(g), gguf);
        }

        string json = Path.Combine(dir.Path, "tokenizer.json");
        File.WriteAllText(json, GgufTokenizerToHf.TokenizerJson(vocab.ToMetadata(tokBin)));
        CheckAgainstLlamaCpp(HfTokenizerJson.Load(json, 1, 2), gguf);
    }

    private static void CheckAgainstLlamaCpp(ITokenizer ours, string path)
    {
        using var llama = LlamaCppModel.Load(path, vocabOnly: true);

        // Every token alone prints the bytes llama.cpp prints for it (llama_token_to_piece without special tokens' text).
        Assert.Equal(llama.VocabSize, ours.VocabSize);
        var differ = Enumerable.Range(0, ours.VocabSize).Where(t => !ours.DecodeBytes(-1, t).AsSpan().SequenceEqual(llama.TokenToPiece(t))).ToList();
        Assert.True(differ.Count == 0, $"{Path.GetFileName(path)}: {differ.Count} tokens print otherwise, e.g. "
            + string.Join(", ", differ.Take(6).Select(t => $"{t}: llama.cpp [{Convert.ToHexString(llama.TokenToPiece(t))}], ours [{Convert.ToHexString(ours.DecodeBytes(-1, t))}]")));

        Text.Sample(text =>
        {
            foreach (bool special in (bool[])[false, true])
            {
                var expected = llama.Tokenize(text, addBos: false, parseSpecial: special);
                var got = ours.Encode(text, addBos: false, parseSpecial: special);
                if (!got.SequenceEqual(expected))
                {
                    throw new Xunit.Sdk.XunitException(
                        $"{Path.GetFileName(path)}, parseSpecial {special}, text {Escape(text)}: llama.cpp [{string.Join(' ', expected)}], ours [{string.Join(' ', got)}]");
                }
            }

            // Plain text (no special tokens parsed) decodes back to itself; SentencePiece's dummy-prefix space, added
            // to the first piece, is dropped when decoding after BOS, as llama.cpp does.
            var ids = ours.Encode(text, addBos: false);
            var decoded = AddsPrefixSpace(ours) && ids.Count > 0 ? ours.Decode([ours.BosToken, .. ids]) : ours.Decode(ids);
            if (!CanRoundTrip(ours, text) || decoded == text)
            {
                return;
            }

            throw new Xunit.Sdk.XunitException($"{Path.GetFileName(path)}: {Escape(text)} decodes back as {Escape(decoded)}");
        }, iter: 1000, threads: 1);
    }

    // SentencePiece-style tokenizers (a GGUF "llama" vocabulary, or a tokenizer.json whose normalizer prepends '▁') put a
    // space before the text that decoding after BOS takes away again.
    private static bool AddsPrefixSpace(ITokenizer tok) => tok is SentencePieceBpeTokenizer
        || (tok is MergesBpeTokenizer m && m.Options.EscapeSpaces && m.Options.SpacePrefix != SpacePrefixScheme.Never);

    // Text that the vocabulary can carry byte for byte: byte-level BPE always can; SentencePiece vocabularies with byte
    // fallback can, except that their normalizer turns spaces into '▁' (which then decodes as a space).
    private static bool CanRoundTrip(ITokenizer tok, string text) => !AddsPrefixSpace(tok) || !text.Contains('▁');

    private static string Escape(string s)
    {
        var b = new StringBuilder("\"");
        foreach (var r in s.EnumerateRunes())
        {
            b.Append(r.Value switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '"' => "\\\"",
                < 0x20 or (>= 0x7f and < 0xa0) or 0x200b or 0x200d or 0xfeff or 0x3000 or 0xa0 => $"\\u{r.Value:x4}",
                _ => r.ToString(),
            });
        }

        return b.Append('"').ToString();
    }
}
