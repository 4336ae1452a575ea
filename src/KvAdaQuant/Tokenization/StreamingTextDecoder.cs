using System.Text;

namespace KvAdaQuant.Tokenization;

/// <summary>Turns a stream of tokens into text, holding back bytes until they form whole UTF-8 characters.</summary>
public sealed class StreamingTextDecoder
{
    private readonly ITokenizer _tokenizer;
    private readonly Decoder _decoder = new UTF8Encoding(false, false).GetDecoder();
    private int _previous;

    /// <summary>Starts decoding after <paramref name="previous"/> (-1 for the start of text).</summary>
    public StreamingTextDecoder(ITokenizer tokenizer, int previous = -1)
    {
        _tokenizer = tokenizer;
        _previous = previous;
    }

    /// <summary>Text completed by <paramref name="token"/> (may be empty).</summary>
    public string Push(int token)
    {
        var bytes = _tokenizer.DecodeBytes(_previous, token);
        _previous = token;
        var chars = new char[_decoder.GetCharCount(bytes, false) + 2];
        int n = _decoder.GetChars(bytes, 0, bytes.Length, chars, 0, false);
        return new string(chars, 0, n);
    }
}
