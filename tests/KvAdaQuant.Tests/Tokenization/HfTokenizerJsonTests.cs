using System.Text.Json;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Tokenization;

/// <summary>
/// tokenizer.json files written from llama.cpp's test vocabularies (the way Hugging Face's converters lay them out)
/// must reproduce llama.cpp's test vectors too.
/// </summary>
public class HfTokenizerJsonTests
{
    private static (string[] Tokens, float[]? Scores, int[] Types, string[]? Merges) ReadVocab(string name)
    {
        using var g = GgufFile.Open(LlamaCppVocabTests.VocabPath(name));
        return ((string[])g.Get("tokenizer.ggml.tokens")!, g.Get("tokenizer.ggml.scores") as float[], (int[])g.Get("tokenizer.ggml.token_type")!, g.Get("tokenizer.ggml.merges") as string[]);
    }

    /// <summary>GPT-2's tokenizer.json: byte-level pre-tokenizer with its regex, merges, &lt;|endoftext|&gt; as a special added token.</summary>
    private static void WriteGpt2Json(string path)
    {
        var (tokens, _, types, merges) = ReadVocab("ggml-vocab-gpt-2.gguf");
        var json = new
        {
            version = "1.0",
            added_tokens = Enumerable.Range(0, tokens.Length).Where(i => types[i] == 3).Select(i => new { id = i, content = tokens[i], single_word = false, lstrip = false, rstrip = false, normalized = false, special = true }),
            normalizer = (object?)null,
            pre_tokenizer = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            decoder = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true },
            model = new { type = "BPE", dropout = (object?)null, unk_token = (object?)null, byte_fallback = false, vocab = Enumerable.Range(0, tokens.Length).ToDictionary(i => tokens[i], i => i), merges },
        };
        File.WriteAllText(path, JsonSerializer.Serialize(json));
    }

    /// <summary>
    /// Llama 2's tokenizer.json as HF's LlamaConverter writes it: Prepend/Replace normalizers, byte fallback, merges
    /// extracted from the SentencePiece vocabulary (every split of a piece into two pieces, by the piece's score).
    /// </summary>
    private static void WriteLlamaSpmJson(string path, bool metaspacePreTokenizer = false)
    {
        var (tokens, scores, types, _) = ReadVocab("ggml-vocab-llama-spm.gguf");
        var ids = Enumerable.Range(0, tokens.Length).ToDictionary(i => tokens[i], i => i);
        var merges = new List<string[]>();
        foreach (int id in Enumerable.Range(0, tokens.Length).OrderByDescending(i => scores![i]).ThenBy(i => i))
        {
            var piece = tokens[id];
            var local = new List<(int L, int R, string[] Pair)>();
            for (int k = 1; k < piece.Length; k++)
            {
                if (char.IsLowSurrogate(piece[k]))
                {
                    continue;
                }

                if (ids.TryGetValue(piece[..k], out int l) && ids.TryGetValue(piece[k..], out int r))
                {
                    local.Add((l, r, [piece[..k], piece[k..]]));
                }
            }

            merges.AddRange(local.OrderBy(x => x.L).ThenBy(x => x.R).Select(x => x.Pair));
        }

        object normalizer = metaspacePreTokenizer ? null! : new
        {
            type = "Sequence",
            normalizers = new object[] { new { type = "Prepend", prepend = "\u2581" }, new { type = "Replace", pattern = new { String = " " }, content = "\u2581" } },
        };
        object? pre = metaspacePreTokenizer ? new { type = "Metaspace", replacement = "\u2581", prepend_scheme = "always", split = false } : null;
        var json = new
        {
            version = "1.0",
            added_tokens = Enumerable.Range(0, tokens.Length).Where(i => types[i] is 2 or 3).Select(i => new { id = i, content = tokens[i], single_word = false, lstrip = false, rstrip = false, normalized = false, special = true }),
            normalizer,
            pre_tokenizer = pre,
            model = new { type = "BPE", dropout = (object?)null, unk_token = "<unk>", fuse_unk = true, byte_fallback = true, ignore_merges = false, vocab = ids, merges },
        };
        File.WriteAllText(path, JsonSerializer.Serialize(json));
    }

    private static void AssertVectors(ITokenizer tok, string vocab)
    {
        var failures = new List<string>();
        var vectors = LlamaCppVocabTests.ReadVectors(LlamaCppVocabTests.VocabPath(vocab));
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

    [Fact]
    public void ByteLevelTokenizerJsonPassesGpt2Vectors()
    {
        using var dir = new TempDir();
        WriteGpt2Json(dir.File("tokenizer.json"));
        var tok = HfTokenizerJson.Load(dir.File("tokenizer.json"));
        Assert.True(tok.Options.ByteLevel);
        Assert.Equal(50256, tok.EosToken);
        Assert.Equal(TokenType.Control, tok.TypeOf(50256));
        AssertVectors(tok, "ggml-vocab-gpt-2.gguf");
        foreach (var (input, _) in LlamaCppVocabTests.ReadVectors(LlamaCppVocabTests.VocabPath("ggml-vocab-gpt-2.gguf")))
        {
            Assert.Equal(input, ((ITokenizer)tok).Decode(tok.Encode(input, addBos: false)));
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SentencePieceStyleTokenizerJsonPassesLlamaSpmVectors(bool metaspace)
    {
        using var dir = new TempDir();
        WriteLlamaSpmJson(dir.File("tokenizer.json"), metaspace);
        var tok = HfTokenizerJson.Load(dir.File("tokenizer.json"), bos: 1, eos: 2);
        Assert.True(tok.Options.EscapeSpaces);
        Assert.True(tok.Options.ByteFallback);
        AssertVectors(tok, "ggml-vocab-llama-spm.gguf");
        foreach (var (input, _) in LlamaCppVocabTests.ReadVectors(LlamaCppVocabTests.VocabPath("ggml-vocab-llama-spm.gguf")))
        {
            Assert.Equal(input, ((ITokenizer)tok).Decode(tok.Encode(input, addBos: true)));
        }
    }

    [Fact]
    public void UserDefinedAddedTokenIsAlwaysMatchedWhole()
    {
        using var dir = new TempDir();
        var vocab = new Dictionary<string, int> { ["a"] = 0, ["b"] = 1, ["ab"] = 2, ["<tool>"] = 3, ["<"] = 4 };
        File.WriteAllText(dir.File("tokenizer.json"), JsonSerializer.Serialize(new
        {
            added_tokens = new[] { new { id = 3, content = "<tool>", special = false, lstrip = false, rstrip = true } },
            model = new { type = "BPE", vocab, merges = new[] { "a b" } },
        }));
        var tok = HfTokenizerJson.Load(dir.File("tokenizer.json"));
        Assert.Equal(TokenType.UserDefined, tok.TypeOf(3));
        Assert.Equal([2, 3, 2], tok.Encode("ab<tool>   ab", addBos: false));
    }

    [Fact]
    public void UnsupportedModelTypeIsRejected()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), """{"model":{"type":"Unigram","vocab":[["a",0.0]]}}""");
        var e = Assert.Throws<ModelFormatException>(() => HfTokenizerJson.Load(dir.File("tokenizer.json")));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("model type 'Unigram' is not supported", e.Message);
    }

    [Fact]
    public void BrokenJsonIsRejected()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), "{\"model\": {");
        var e = Assert.Throws<ModelFormatException>(() => HfTokenizerJson.Load(dir.File("tokenizer.json")));
        Assert.Contains("not valid JSON", e.Message);
    }
}
