using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Tokenization;

/// <summary>Pre-tokenizer splits for the GGUF <c>tokenizer.ggml.pre</c> schemes, worked out by hand from their regexes.</summary>
public class BpePreTokenizerTests
{
    private static string[] Split(string pre, string text) => BpePreTokenizer.ForGgufPre(pre)!.Value.PreTokenizer.Split(text).ToArray();

    [Fact]
    public void Llama3GroupsDigitsByThreeAndKeepsNewlineRuns()
    {
        Assert.Equal(["Hello", " world", "123", "456", "7", " don", "'t", "\n\n", " ", " x"], Split("llama-bpe", "Hello world1234567 don't\n\n  x"));
        Assert.Equal(["I", "'VE"], Split("llama3", "I'VE"));
        Assert.True(BpePreTokenizer.ForGgufPre("llama-bpe")!.Value.IgnoreMerges);
    }

    [Fact]
    public void Qwen2SplitsSingleDigits()
    {
        Assert.Equal(["abc", " ", "1", "2", "3", "4", "5"], Split("qwen2", "abc 12345"));
        Assert.False(BpePreTokenizer.ForGgufPre("qwen2")!.Value.IgnoreMerges);
    }

    [Fact]
    public void SmolLmSplitsDigitsThenAppliesGpt2()
    {
        Assert.Equal(["ab", "1", "2", " c", "'s"], Split("smollm", "ab12 c's"));
    }

    [Fact]
    public void Gpt2KeepsSpaceWithFollowingWordAndSplitsTrailingSpaces()
    {
        Assert.Equal(["Hello", " world", "  ", " !!", " "], Split("gpt-2", "Hello world   !! "));
    }

    [Fact]
    public void CodePointsOutsideTheBmpCountAsOneCharacterOfTheirCategory()
    {
        // U+1D400 MATHEMATICAL BOLD CAPITAL A is a letter: it joins " ?\p{L}+", and "!" is split off.
        Assert.Equal([" \U0001D400\U0001D401", "!"], Split("gpt-2", " \U0001D400\U0001D401!"));

        // An emoji (So) is punctuation-like: it stays with the following "!" in " ?[^\s\p{L}\p{N}]+".
        Assert.Equal(["a", " \U0001F999!"], Split("gpt-2", "a \U0001F999!"));
    }

    [Fact]
    public void UnknownPreTokenizerIsNull()
    {
        Assert.Null(BpePreTokenizer.ForGgufPre("tekken"));
    }
}
