using System.Text;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Tokenization;

/// <summary>llama.cpp's tokenizer test vectors (test-tokenizer-0): every input, no BOS, no special-token parsing.</summary>
public class LlamaCppVocabTests
{
    public static string VocabPath(string name) => Fixtures.Path("tokenizers", "llama.cpp-vocab", name);

    /// <summary>Reads <c>.inp</c>/<c>.out</c> as llama.cpp's read_tests does: inputs separated by "\n__ggml_vocab_test__\n", ids one line each.</summary>
    public static List<(string Input, int[] Expected)> ReadVectors(string gguf)
    {
        var raw = File.ReadAllText(gguf + ".inp", new UTF8Encoding(false, true));
        var outLines = File.ReadAllLines(gguf + ".out");
        const string sep = "\n__ggml_vocab_test__\n";
        var inputs = new List<string>();
        int pos = 0;
        while (pos < raw.Length)
        {
            int next = raw.IndexOf(sep, pos, StringComparison.Ordinal);
            if (next < 0)
            {
                inputs.Add(raw[pos..]);
                break;
            }

            inputs.Add(raw[pos..next]);
            pos = next + sep.Length;
        }

        Assert.Equal(inputs.Count, outLines.Length);
        return inputs.Select((s, i) => (s, outLines[i].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray())).ToList();
    }

    public static ITokenizer Load(string name)
    {
        using var g = GgufFile.Open(VocabPath(name));
        return GgufTokenizerFactory.Create(g);
    }

    [Theory]
    [InlineData("ggml-vocab-llama-spm.gguf", typeof(SentencePieceBpeTokenizer))]
    [InlineData("ggml-vocab-gpt-2.gguf", typeof(MergesBpeTokenizer))]
    public void AllTestVectorsEncodeExactly(string vocab, Type expectedType)
    {
        var tok = Load(vocab);
        Assert.IsType(expectedType, tok);
        AssertEncodesTheVectors(tok, vocab);
    }

    /// <summary>All 46 of llama.cpp's test vectors for <paramref name="vocab"/> encode to their token ids, listing every failure.</summary>
    internal static void AssertEncodesTheVectors(ITokenizer tok, string vocab)
    {
        var vectors = ReadVectors(VocabPath(vocab));
        Assert.Equal(46, vectors.Count);
        var failures = new List<string>();
        foreach (var (input, expected) in vectors)
        {
            var got = tok.Encode(input, addBos: false);
            if (!got.SequenceEqual(expected))
            {
                failures.Add($"'{input}': expected [{string.Join(' ', expected)}] got [{string.Join(' ', got)}]");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {vectors.Count} failed:\n" + string.Join('\n', failures));
    }

    [Theory]
    [InlineData("ggml-vocab-llama-spm.gguf")]
    [InlineData("ggml-vocab-gpt-2.gguf")]
    public void TestVectorsDecodeBackToTheirInput(string vocab)
    {
        var tok = Load(vocab);
        foreach (var (input, expected) in ReadVectors(VocabPath(vocab)))
        {
            // SentencePiece adds a dummy-prefix space that decoding drops after BOS; byte-level BPE is lossless as is.
            var ids = tok is SentencePieceBpeTokenizer ? [tok.BosToken, .. expected] : expected.ToList();
            Assert.Equal(input, tok.Decode(ids));
        }
    }

    [Fact]
    public void SpmMetadataIsRead()
    {
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(Load("ggml-vocab-llama-spm.gguf"));
        Assert.Equal(32000, tok.VocabSize);
        Assert.Equal(1, tok.BosToken);
        Assert.Equal(2, tok.EosToken);
        Assert.Equal(TokenType.Control, tok.TypeOf(1));
        Assert.Equal(TokenType.Byte, tok.TypeOf(3 + 10));
        Assert.Equal([1, 15043, 3186], tok.Encode("Hello world", addBos: true));

        // Control tokens in text are plain text unless parsing special tokens is asked for.
        Assert.DoesNotContain(2, tok.Encode("a</s>b", addBos: false));
        Assert.Contains(2, tok.Encode("a</s>b", addBos: false, parseSpecial: true));
    }

    [Fact]
    public void Gpt2EndOfTextIsControlAndPrintsNothing()
    {
        var tok = Assert.IsType<MergesBpeTokenizer>(Load("ggml-vocab-gpt-2.gguf"));
        Assert.Equal(50257, tok.VocabSize);
        Assert.Equal(50256, tok.EosToken);
        Assert.Equal(TokenType.Control, tok.TypeOf(50256));
        Assert.Empty(tok.DecodeBytes(-1, 50256));
        Assert.Equal([50256], tok.Encode("<|endoftext|>", addBos: false, parseSpecial: true));
        Assert.NotEqual([50256], tok.Encode("<|endoftext|>", addBos: false));
    }
}
