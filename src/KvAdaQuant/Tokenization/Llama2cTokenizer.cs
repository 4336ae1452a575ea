using System.Buffers.Binary;
using System.Text;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// llama2.c's <c>tokenizer.bin</c>: SentencePiece BPE by score. Encoding follows llama2.c's <c>encode</c>
/// exactly (dummy-prefix space, code points looked up whole, byte fallback to ids 3..258, then repeatedly
/// merge the adjacent pair whose concatenation is the highest-scoring vocabulary entry, leftmost on ties),
/// done with a priority queue so long texts encode in n log n.
/// </summary>
public sealed class Llama2cTokenizer : ITokenizer
{
    private readonly byte[][] _pieces;
    private readonly float[] _scores;
    private readonly Dictionary<string, int> _lookup;

    private Llama2cTokenizer(byte[][] pieces, float[] scores)
    {
        _pieces = pieces;
        _scores = scores;
        _lookup = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++)
        {
            _lookup.TryAdd(Encoding.UTF8.GetString(pieces[i]), i);
        }
    }

    /// <inheritdoc/>
    public int VocabSize => _pieces.Length;

    /// <inheritdoc/>
    public int BosToken => 1;

    /// <inheritdoc/>
    public int EosToken => 2;

    /// <summary>Loads <paramref name="path"/> holding <paramref name="vocabSize"/> entries.</summary>
    public static Llama2cTokenizer Load(string path, int vocabSize)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: tokenizer file not found", path);
        }

        var data = File.ReadAllBytes(path);
        if (vocabSize <= 0 || vocabSize > 1 << 22)
        {
            throw new ModelFormatException(path, $"vocabulary size {vocabSize} is out of range");
        }

        var pieces = new byte[vocabSize][];
        var scores = new float[vocabSize];
        if (data.Length < 4)
        {
            throw new ModelFormatException(path, "tokenizer file is shorter than its 4-byte header");
        }

        int off = 4;
        for (int i = 0; i < vocabSize; i++)
        {
            if (off + 8 > data.Length)
            {
                throw new ModelFormatException(path, $"tokenizer ends after {i} tokens but the model has a vocabulary of {vocabSize}");
            }

            scores[i] = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(off));
            int len = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(off + 4));
            off += 8;
            // Compared with what is left, not as off + len, which a length near int.MaxValue overflows.
            if (len < 0 || len > data.Length - off)
            {
                throw new ModelFormatException(path, $"token {i}: length {len} at offset {off - 4} runs past the end of the file ({data.Length} bytes)");
            }

            pieces[i] = data.AsSpan(off, len).ToArray();
            off += len;
        }

        if (off != data.Length)
        {
            throw new ModelFormatException(path, $"tokenizer holds more than the model's {vocabSize} tokens ({data.Length - off} bytes left over): tokenizer and model vocabularies disagree");
        }

        return new Llama2cTokenizer(pieces, scores);
    }

    /// <summary>Piece bytes of a token.</summary>
    public ReadOnlySpan<byte> Piece(int token) => _pieces[token];

    /// <inheritdoc/>
    public List<int> Encode(string text, bool addBos)
    {
        var result = new List<int>();
        if (addBos)
        {
            result.Add(BosToken);
        }

        if (text.Length == 0)
        {
            return result;
        }

        var syms = new List<int>();
        if (_lookup.TryGetValue(" ", out int space))
        {
            syms.Add(space);
        }

        Span<byte> buf = stackalloc byte[4];
        foreach (var rune in text.EnumerateRunes())
        {
            if (_lookup.TryGetValue(rune.ToString(), out int id))
            {
                syms.Add(id);
            }
            else
            {
                int n = rune.EncodeToUtf8(buf);
                for (int i = 0; i < n; i++)
                {
                    syms.Add(buf[i] + 3);
                }
            }
        }

        result.AddRange(MergeByScore(syms));
        return result;
    }

    /// <inheritdoc/>
    public byte[] DecodeBytes(int previous, int token)
    {
        if ((uint)token >= (uint)_pieces.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(token), $"token {token} is outside the tokenizer's vocabulary of {_pieces.Length}");
        }

        if (token is 1 or 2)
        {
            return []; // BOS and EOS are control tokens: they print nothing
        }

        var piece = _pieces[token];
        if (previous == BosToken && piece.Length > 0 && piece[0] == (byte)' ')
        {
            piece = piece[1..];
        }

        if (piece.Length == 6 && piece[0] == '<' && piece[1] == '0' && piece[2] == 'x' && piece[5] == '>'
            && byte.TryParse(Encoding.ASCII.GetString(piece, 3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
        {
            return [b];
        }

        return piece;
    }

    private List<int> MergeByScore(List<int> initial)
    {
        int n = initial.Count;
        var id = initial.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }

        // Candidate (left, right, merged id); priority: higher score first, then leftmost.
        var queue = new PriorityQueue<(int Left, int Right, int LeftId, int RightId, int Merged), (float, int)>();
        void TryPush(int left)
        {
            int right = left >= 0 ? next[left] : -1;
            if (left < 0 || right < 0)
            {
                return;
            }

            var s = Encoding.UTF8.GetString(_pieces[id[left]]) + Encoding.UTF8.GetString(_pieces[id[right]]);
            if (_lookup.TryGetValue(s, out int merged))
            {
                queue.Enqueue((left, right, id[left], id[right], merged), (-_scores[merged], left));
            }
        }

        for (int i = 0; i + 1 < n; i++)
        {
            TryPush(i);
        }

        while (queue.TryDequeue(out var c, out _))
        {
            if (!alive[c.Left] || !alive[c.Right] || next[c.Left] != c.Right || id[c.Left] != c.LeftId || id[c.Right] != c.RightId)
            {
                continue;
            }

            id[c.Left] = c.Merged;
            alive[c.Right] = false;
            next[c.Left] = next[c.Right];
            if (next[c.Right] >= 0)
            {
                prev[next[c.Right]] = c.Left;
            }

            TryPush(prev[c.Left]);
            TryPush(c.Left);
        }

        var result = new List<int>(n);
        for (int i = 0; i >= 0 && n > 0; i = next[i])
        {
            result.Add(id[i]);
        }

        return result;
    }
}
