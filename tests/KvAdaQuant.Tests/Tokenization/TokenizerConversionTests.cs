using System.Text.Json.Nodes;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Tokenization;

/// <summary>
/// GGUF tokenizers written as tokenizer.json (<see cref="GgufTokenizerToHf"/>) and tokenizer.json carried into GGUF
/// (<see cref="HfTokenizerToGguf"/>) must still pass llama.cpp's own test vectors, and what cannot be carried is refused.
/// </summary>
public class TokenizerConversionTests
{
    private static GgufTokenizerMetadata Vocab(string name)
    {
        using var g = GgufFile.Open(LlamaCppVocabTests.VocabPath(name));
        return GgufTokenizerMetadata.FromGguf(g)!;
    }

    private static void AssertVectors(ITokenizer tok, string vocab) => LlamaCppVocabTests.AssertEncodesTheVectors(tok, vocab);

    [Theory]
    [InlineData("ggml-vocab-llama-spm.gguf", "llama", null)]
    [InlineData("ggml-vocab-gpt-2.gguf", "gpt2", "gpt-2")]
    public void GgufToTokenizerJsonAndBackPassesLlamaCppVectors(string vocab, string model, string? pre)
    {
        using var dir = new TempDir();
        var original = Vocab(vocab);
        var gguf = GgufTokenizerFactory.Create(original);
        var json = dir.File("tokenizer.json");
        File.WriteAllText(json, GgufTokenizerToHf.TokenizerJson(original));

        var hf = HfTokenizerJson.Load(json, gguf.BosToken, gguf.EosToken);
        AssertVectors(hf, vocab);
        TokenizerEquivalence.Verify(gguf, hf, "to tokenizer.json");

        var back = HfTokenizerToGguf.Convert(json, gguf.VocabSize, gguf.BosToken, gguf.EosToken);
        Assert.Equal(model, back.Model);
        Assert.Equal(pre, back.Values.GetValueOrDefault("tokenizer.ggml.pre"));
        Assert.Equal((string[])original.Values["tokenizer.ggml.tokens"], (string[])back.Values["tokenizer.ggml.tokens"]);
        var again = GgufTokenizerFactory.Create(back);
        AssertVectors(again, vocab);
        TokenizerEquivalence.Verify(hf, again, "back to GGUF");
    }

    [Fact]
    public void UnusedPaddingTokensAreLeftOutOfTokenizerJsonAndPaddedBackForGguf()
    {
        // llama.cpp's converter pads a vocabulary to the model's rows with [PAD{id}] tokens of type UNUSED.
        using var dir = new TempDir();
        var m = Vocab("ggml-vocab-gpt-2.gguf");
        var tokens = (string[])m.Values["tokenizer.ggml.tokens"];
        int n = tokens.Length;
        m.Set("tokenizer.ggml.tokens", [.. tokens, .. Enumerable.Range(n, 7).Select(i => $"[PAD{i}]")]);
        m.Set("tokenizer.ggml.token_type", [.. (int[])m.Values["tokenizer.ggml.token_type"], .. Enumerable.Repeat((int)TokenType.Unused, 7)]);
        var padded = GgufTokenizerFactory.Create(m);
        Assert.Equal(n + 7, padded.VocabSize);
        File.WriteAllText(dir.File("tokenizer.json"), GgufTokenizerToHf.TokenizerJson(m));
        var hf = HfTokenizerJson.Load(dir.File("tokenizer.json"), padded.BosToken, padded.EosToken);
        Assert.Equal(n, hf.VocabSize);
        TokenizerEquivalence.Verify(padded, hf, "padded to tokenizer.json");
        var back = HfTokenizerToGguf.Convert(dir.File("tokenizer.json"), n + 7, padded.BosToken, padded.EosToken);
        Assert.Equal($"[PAD{n + 6}]", ((string[])back.Values["tokenizer.ggml.tokens"])[^1]);
        Assert.Equal((int)TokenType.Unused, ((int[])back.Values["tokenizer.ggml.token_type"])[^1]);
        TokenizerEquivalence.Verify(hf, GgufTokenizerFactory.Create(back), "back to GGUF");

        // A padding token that printed text would be a real difference: refused.
        var printing = Vocab("ggml-vocab-gpt-2.gguf");
        printing.Set("tokenizer.ggml.tokens", [.. tokens, "zzqqxxj"]);
        printing.Set("tokenizer.ggml.token_type", [.. (int[])printing.Values["tokenizer.ggml.token_type"], (int)TokenType.Normal]);
        var e = Assert.Throws<InvalidDataException>(() => TokenizerEquivalence.Verify(GgufTokenizerFactory.Create(printing), hf, "extra token"));
        Assert.Contains($"token {n} decodes to text in the original tokenizer", e.Message);
    }

    [Fact]
    public void SentencePieceScoresComeBackAsMergeOrderNotAsTheOriginalValues()
    {
        // The round trip keeps tokenization, not the numbers: scores become minus the first merge rank of each token.
        using var dir = new TempDir();
        var original = Vocab("ggml-vocab-llama-spm.gguf");
        File.WriteAllText(dir.File("tokenizer.json"), GgufTokenizerToHf.TokenizerJson(original));
        var back = HfTokenizerToGguf.Convert(dir.File("tokenizer.json"), original.TokenCount, 1, 2);
        var tokens = (string[])back.Values["tokenizer.ggml.tokens"];
        var scores = (float[])back.Values["tokenizer.ggml.scores"];
        var before = (float[])original.Values["tokenizer.ggml.scores"];
        int the = Array.IndexOf(tokens, "\u2581the");
        int t = Array.IndexOf(tokens, "\u2581t");
        Assert.True(before[t] > before[the]);
        Assert.True(scores[t] > scores[the], "a token merged earlier keeps the higher score");
        Assert.Equal(0f, scores[Array.IndexOf(tokens, "<0x41>")]);
    }

    [Fact]
    public void Llama2VocabularyFromTokenizerBinRoundTripsThroughTokenizerJson()
    {
        // The 32,000-token Llama 2 vocabulary, exported from llama2.c's tokenizer.bin, through tokenizer.json and back.
        using var dir = new TempDir();
        var bin = Fixtures.Path("tokenizers", "llama2-32k", "tokenizer.bin");
        var metadata = GgufVocabulary.FromLlama2cTokenizer(bin, 32000).ToMetadata(bin);
        var gguf = GgufTokenizerFactory.Create(metadata);
        File.WriteAllText(dir.File("tokenizer.json"), GgufTokenizerToHf.TokenizerJson(metadata));
        var hf = HfTokenizerJson.Load(dir.File("tokenizer.json"), 1, 2);
        TokenizerEquivalence.Verify(gguf, hf, "Llama 2 to tokenizer.json");
        var back = GgufTokenizerFactory.Create(HfTokenizerToGguf.Convert(dir.File("tokenizer.json"), 32000, 1, 2));
        var text = File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..20_000];
        var expected = gguf.Encode(text, addBos: true);
        Assert.True(expected.Count > 4000);
        Assert.Equal(expected, hf.Encode(text, addBos: true));
        Assert.Equal(expected, back.Encode(text, addBos: true));
    }

    [Fact]
    public void HuggingFaceSpellingsOfKnownRegexesNameTheirGgufPreTokenizer()
    {
        // Llama 3's tokenizer.json: Split with the case-insensitive contraction group, ByteLevel without a regex, ignore_merges.
        using var dir = new TempDir();
        const string llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        const string qwen2 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        Assert.Equal("llama-bpe", PreOf(dir, ByteLevelJson(SplitThenByteLevel(llama3), ignoreMerges: true)));
        Assert.Equal("qwen2", PreOf(dir, ByteLevelJson(SplitThenByteLevel(qwen2), ignoreMerges: false)));
        Assert.Equal("gpt-2", PreOf(dir, ByteLevelJson(new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true }, ignoreMerges: false)));
        var smollm = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(new JsonObject { ["type"] = "Digits", ["individual_digits"] = true }, new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true }),
        };
        Assert.Equal("smollm", PreOf(dir, ByteLevelJson(smollm, ignoreMerges: false)));

        // The same Llama 3 regex without ignore_merges is no scheme llama.cpp has: refused, not guessed.
        var e = Assert.Throws<ModelFormatException>(() => PreOf(dir, ByteLevelJson(SplitThenByteLevel(llama3), ignoreMerges: false)));
        Assert.Contains("matches none of the GGUF pre-tokenizers", e.Message);
        Assert.Contains("cannot be carried", e.Message);
    }

    [Fact]
    public void ByteLevelTokenizerWithAnUnknownRegexIsRefused()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ModelFormatException>(() => PreOf(dir, ByteLevelJson(SplitThenByteLevel(@"\p{L}+|\p{N}"), ignoreMerges: false)));
        Assert.Contains(dir.File("tokenizer.json"), e.Message);
        Assert.Contains(@"\p{L}+|\p{N}", e.Message);
    }

    [Fact]
    public void SentencePieceStyleWithoutByteFallbackIsRefused()
    {
        using var dir = new TempDir();
        var json = SpmJson(new() { ["a"] = 3, ["b"] = 4, ["ab"] = 5 }, ["a b"]);
        json["model"]!["byte_fallback"] = false;
        var e = Refused(dir, json);
        Assert.Contains("without byte_fallback", e.Message);
    }

    [Fact]
    public void SentencePieceStyleWithATokenThatIsNoMergeIsRefused()
    {
        // "abc" splits into the tokens "ab" and "c", but only "a bc" is a merge: llama.cpp would merge "ab"+"c" too.
        using var dir = new TempDir();
        var e = Refused(dir, SpmJson(new() { ["a"] = 3, ["b"] = 4, ["c"] = 5, ["ab"] = 6, ["bc"] = 7, ["abc"] = 8 }, ["a b", "b c", "a bc"]));
        Assert.Contains("token 8 'abc' splits into the tokens 'ab' and 'c'", e.Message);
        Assert.Contains("cannot be carried", e.Message);
    }

    [Fact]
    public void SentencePieceStyleWithInterleavedMergeRanksIsRefused()
    {
        using var dir = new TempDir();
        var e = Refused(dir, SpmJson(new() { ["a"] = 3, ["b"] = 4, ["c"] = 5, ["ab"] = 6, ["bc"] = 7, ["abc"] = 8 }, ["a bc", "a b", "ab c", "b c"]));
        Assert.Contains("the merges making 'abc' do not have consecutive ranks", e.Message);
    }

    [Fact]
    public void SentencePieceStyleWithCompleteMergesIsCarried()
    {
        // The control for the two refusals above: the same vocabulary with every split a merge, grouped by token.
        using var dir = new TempDir();
        var json = SpmJson(new() { ["a"] = 3, ["b"] = 4, ["c"] = 5, ["ab"] = 6, ["bc"] = 7, ["abc"] = 8 }, ["b c", "a b", "a bc", "ab c"]);
        json["normalizer"] = JsonNode.Parse("""{"type":"Replace","pattern":{"String":" "},"content":"\u2581"}""");
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        var m = HfTokenizerToGguf.Convert(dir.File("tokenizer.json"), 9 + 256, 1, 2);
        Assert.Equal(false, m.Values["tokenizer.ggml.add_space_prefix"]);
        Assert.Equal(new float[] { 0, 0, 0, 0, 0, 0, -1, 0, -2 }, ((float[])m.Values["tokenizer.ggml.scores"])[..9]);
        var gguf = GgufTokenizerFactory.Create(m);
        Assert.Equal([1, 8, 7, 6], gguf.Encode("abcbcab", addBos: true).Take(4));
        TokenizerEquivalence.Verify(HfTokenizerJson.Load(dir.File("tokenizer.json"), 1, 2), gguf, "small vocabulary");
    }

    [Fact]
    public void UnigramTokenizerJsonIsRefusedByName()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), """{"model":{"type":"Unigram","vocab":[["a",0.0]]}}""");
        var e = Assert.Throws<ModelFormatException>(() => HfTokenizerToGguf.Convert(dir.File("tokenizer.json"), 10, 1, 2));
        Assert.Contains(dir.File("tokenizer.json"), e.Message);
        Assert.Contains("Unigram", e.Message);
    }

    [Fact]
    public void VerifyCatchesATokenizerThatEncodesDifferently()
    {
        // The equivalence check must be able to fail: the llama-spm vocabulary with two merge scores swapped.
        var original = Vocab("ggml-vocab-llama-spm.gguf");
        var tokens = (string[])original.Values["tokenizer.ggml.tokens"];
        var scores = ((float[])original.Values["tokenizer.ggml.scores"]).ToArray();
        int a = Array.IndexOf(tokens, "\u2581the"), b = Array.IndexOf(tokens, "\u2581th");
        (scores[a], scores[b]) = (scores[b] - 1e6f, scores[a]);
        var changed = Vocab("ggml-vocab-llama-spm.gguf").Set("tokenizer.ggml.scores", scores);
        var e = Assert.Throws<InvalidDataException>(() => TokenizerEquivalence.Verify(GgufTokenizerFactory.Create(original), GgufTokenizerFactory.Create(changed), "swapped scores"));
        Assert.Contains("swapped scores", e.Message);
        Assert.Contains("encodes to", e.Message);
    }

    private static string PreOf(TempDir dir, JsonObject json)
    {
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        return (string)HfTokenizerToGguf.Convert(dir.File("tokenizer.json"), 300, -1, -1).Values["tokenizer.ggml.pre"];
    }

    private static ModelFormatException Refused(TempDir dir, JsonObject json)
    {
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => HfTokenizerToGguf.Convert(dir.File("tokenizer.json"), 300, 1, 2));
        Assert.Contains(dir.File("tokenizer.json"), e.Message);
        return e;
    }

    private static JsonObject SplitThenByteLevel(string regex) => new()
    {
        ["type"] = "Sequence",
        ["pretokenizers"] = new JsonArray(
            new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false },
            new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
    };

    /// <summary>A byte-level tokenizer.json over the 256 byte characters and one merge.</summary>
    private static JsonObject ByteLevelJson(JsonObject preTokenizer, bool ignoreMerges)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++)
        {
            vocab[ByteLevelEncoding.Encode((byte)b).ToString()] = b;
        }

        vocab["he"] = vocab.Count;
        return new JsonObject
        {
            ["pre_tokenizer"] = preTokenizer,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray("h e"), ["ignore_merges"] = ignoreMerges },
        };
    }

    /// <summary>A SentencePiece-style tokenizer.json: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, the given pieces, and the 256 byte tokens after them.</summary>
    private static JsonObject SpmJson(Dictionary<string, int> pieces, string[] merges)
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        foreach (var (k, v) in pieces)
        {
            vocab[k] = v;
        }

        int next = pieces.Values.Max() + 1;
        for (int b = 0; b < 256; b++)
        {
            vocab[$"<0x{b:X2}>"] = next++;
        }

        return new JsonObject
        {
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 0, ["content"] = "<unk>", ["special"] = true },
                new JsonObject { ["id"] = 1, ["content"] = "<s>", ["special"] = true },
                new JsonObject { ["id"] = 2, ["content"] = "</s>", ["special"] = true }),
            ["normalizer"] = JsonNode.Parse("""{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"\u2581"},{"type":"Replace","pattern":{"String":" "},"content":"\u2581"}]}"""),
            ["model"] = new JsonObject { ["type"] = "BPE", ["unk_token"] = "<unk>", ["byte_fallback"] = true, ["vocab"] = vocab, ["merges"] = new JsonArray(merges.Select(m => (JsonNode?)JsonValue.Create(m)).ToArray()) },
        };
    }
}
