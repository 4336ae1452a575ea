namespace KvAdaQuant.Tokenization;

/// <summary>Text to token ids and back.</summary>
public interface ITokenizer
{
    /// <summary>Number of tokens.</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, or -1.</summary>
    int BosToken { get; }

    /// <summary>End-of-sequence id, or -1.</summary>
    int EosToken { get; }

    /// <summary>Encodes <paramref name="text"/>, with BOS first when <paramref name="addBos"/>.</summary>
    List<int> Encode(string text, bool addBos);

    /// <summary>
    /// Encodes <paramref name="text"/>; with <paramref name="parseSpecial"/> control tokens written in the text (such as
    /// <c>&lt;/s&gt;</c> or <c>&lt;|im_end|&gt;</c>) become their ids, as llama.cpp's <c>parse_special</c>. A tokenizer
    /// without control tokens encodes them as text.
    /// </summary>
    List<int> Encode(string text, bool addBos, bool parseSpecial) => Encode(text, addBos);

    /// <summary>Raw bytes of <paramref name="token"/> when it follows <paramref name="previous"/> (-1 at the start).</summary>
    byte[] DecodeBytes(int previous, int token);

    /// <summary>Decodes a whole sequence into text.</summary>
    string Decode(IReadOnlyList<int> tokens)
    {
        var bytes = new List<byte>();
        int prev = -1;
        foreach (int t in tokens)
        {
            bytes.AddRange(DecodeBytes(prev, t));
            prev = t;
        }

        return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
    }
}
