using System.Text;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// GPT-2's reversible map from bytes to printable code points (<c>bytes_to_unicode</c>): printable Latin-1 bytes
/// map to themselves, the others to U+0100 upwards, so a space is <c>Ġ</c> and a newline <c>Ċ</c>.
/// </summary>
public static class ByteLevelEncoding
{
    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    /// <summary>The code point standing for byte <paramref name="b"/>.</summary>
    public static char Encode(byte b) => ByteToChar[b];

    /// <summary>The UTF-8 bytes of <paramref name="text"/> written as byte-level characters.</summary>
    public static string Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, (span, b) =>
        {
            for (int i = 0; i < b.Length; i++)
            {
                span[i] = ByteToChar[b[i]];
            }
        });
    }

    /// <summary>Bytes of a byte-level token text; characters outside the map are kept as their own UTF-8.</summary>
    public static byte[] Decode(string text)
    {
        var result = new List<byte>(text.Length);
        Span<byte> buf = stackalloc byte[4];
        foreach (var rune in text.EnumerateRunes())
        {
            if (rune.IsBmp && CharToByte.TryGetValue((char)rune.Value, out byte b))
            {
                result.Add(b);
            }
            else
            {
                int n = rune.EncodeToUtf8(buf);
                for (int i = 0; i < n; i++)
                {
                    result.Add(buf[i]);
                }
            }
        }

        return result.ToArray();
    }

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var direct = new bool[256];
        for (int b = '!'; b <= '~'; b++)
        {
            direct[b] = true;
        }

        for (int b = 0xA1; b <= 0xAC; b++)
        {
            direct[b] = true;
        }

        for (int b = 0xAE; b <= 0xFF; b++)
        {
            direct[b] = true;
        }

        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            map[b] = direct[b] ? (char)b : (char)(256 + next++);
        }

        return map;
    }
}
