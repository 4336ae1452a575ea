using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Tokenization;

public class Llama2cTokenizerTests
{
    [Fact]
    public void EncodesReferenceTextToTheTokensTheModelGenerated()
    {
        var reference = Fixtures.ReferenceGreedy("stories260K");
        var tok = Llama2cTokenizer.Load(Fixtures.Stories260KTokenizer, 512);
        var ids = reference.GetProperty("greedy_token_ids").EnumerateArray().Select(e => e.GetInt32()).ToList();
        var text = ((ITokenizer)tok).Decode([1, .. ids]);
        Assert.Equal(reference.GetProperty("decoded_text").GetString(), text);
        var encoded = tok.Encode("Once upon a time, there was a little girl named Lily.", addBos: true);
        Assert.Equal([1, .. ids.Take(15)], encoded);
    }

    [Fact]
    public void ByteFallbackRoundTripsUnicode()
    {
        var tok = Llama2cTokenizer.Load(Fixtures.Stories260KTokenizer, 512);
        const string text = "Zoë says 你好 🙂!";
        var ids = tok.Encode(text, addBos: true);
        Assert.Contains(ids, id => id is >= 3 and < 259);
        Assert.Equal(" " + text, ((ITokenizer)tok).Decode(ids.Skip(1).ToList()));
        Assert.Equal(text, ((ITokenizer)tok).Decode(ids));
    }

    [Fact]
    public void StreamingDecoderHoldsPartialCharacters()
    {
        var tok = Llama2cTokenizer.Load(Fixtures.Stories260KTokenizer, 512);
        var ids = tok.Encode("你", addBos: true);
        var dec = new StreamingTextDecoder(tok, 1);
        var pieces = ids.Skip(1).Select(dec.Push).ToList();
        Assert.Equal("你", string.Concat(pieces).Trim());
        Assert.True(pieces.Count(p => p.Length == 0) >= 1);
    }

    [Fact]
    public void EmptyTextIsBosOnly()
    {
        var tok = Llama2cTokenizer.Load(Fixtures.Stories260KTokenizer, 512);
        Assert.Equal([1], tok.Encode(string.Empty, addBos: true));
        Assert.Empty(tok.Encode(string.Empty, addBos: false));
    }
}
