using System.Globalization;
using System.Text;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// SentencePiece BPE by scores with byte fallback: GGUF <c>tokenizer.ggml.model = llama</c>. Encoding follows
/// llama.cpp's <c>llm_tokenizer_spm</c>: special tokens are cut out first (user-defined always, control tokens
/// only when asked), each remaining text fragment gets a dummy-prefix space when it starts the text or follows a
/// special token (<c>add_space_prefix</c>), spaces become U+2581, the text is split into code points, and the
/// adjacent pair whose concatenation is the highest-scoring vocabulary entry is merged (leftmost on ties) until
/// none is left; a symbol that is not a token falls back to its UTF-8 bytes (<c>&lt;0xXX&gt;</c>).
/// </summary>
public sealed class SentencePieceBpeTokenizer : ITokenizer
{
    private const char Escape = '\u2581';

    private readonly string[] _tokens;
    private readonly float[] _scores;
    private readonly TokenType[] _types;
    private readonly Dictionary<string, int> _lookup;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _spanLookup;
    private readonly int[] _byteTokens = new int[256];
    private readonly byte[][] _pieces;
    private readonly SpecialTokenSplitter _splitter;

    /// <summary>Creates the tokenizer from a vocabulary.</summary>
    /// <param name="source">file the vocabulary came from (for error messages).</param>
    /// <param name="tokens">token texts by id (spaces written as U+2581).</param>
    /// <param name="scores">scores by id (higher merges first).</param>
    /// <param name="types">token types by id, or null for all normal.</param>
    /// <param name="bos">BOS id or -1.</param>
    /// <param name="eos">EOS id or -1.</param>
    /// <param name="addSpacePrefix">whether a dummy space starts each text fragment (<c>tokenizer.ggml.add_space_prefix</c>, default true).</param>
    public SentencePieceBpeTokenizer(string source, string[] tokens, float[] scores, TokenType[]? types, int bos, int eos, bool addSpacePrefix = true)
    {
        if (scores.Length != tokens.Length || (types is not null && types.Length != tokens.Length))
        {
            throw new Formats.ModelFormatException(source, $"tokenizer has {tokens.Length} tokens but {scores.Length} scores and {types?.Length ?? tokens.Length} token types");
        }

        _tokens = tokens;
        _scores = scores;
        _types = types ?? Enumerable.Repeat(TokenType.Normal, tokens.Length).ToArray();
        BosToken = bos;
        EosToken = eos;
        AddSpacePrefix = addSpacePrefix;
        _lookup = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
        {
            if (!_lookup.TryAdd(tokens[i], i))
            {
                throw new Formats.ModelFormatException(source, $"duplicate token '{tokens[i]}' at ids {_lookup[tokens[i]]} and {i}");
            }
        }

        _spanLookup = _lookup.GetAlternateLookup<ReadOnlySpan<char>>();
        for (int b = 0; b < 256; b++)
        {
            _byteTokens[b] = _lookup.TryGetValue($"<0x{b:X2}>", out int id) ? id
                : _lookup.TryGetValue(((char)b).ToString(), out id) && b < 128 ? id : -1;
        }

        _pieces = new byte[tokens.Length][];
        for (int i = 0; i < tokens.Length; i++)
        {
            _pieces[i] = PieceBytes(i);
        }

        _splitter = new SpecialTokenSplitter(tokens, _types);
    }

    /// <inheritdoc/>
    public int VocabSize => _tokens.Length;

    /// <inheritdoc/>
    public int BosToken { get; }

    /// <inheritdoc/>
    public int EosToken { get; }

    /// <summary>Whether each text fragment gets a leading space before encoding.</summary>
    public bool AddSpacePrefix { get; }

    /// <summary>Type of a token.</summary>
    public TokenType TypeOf(int token) => _types[token];

    /// <summary>Text of a token as stored in the vocabulary.</summary>
    public string TokenText(int token) => _tokens[token];

    /// <inheritdoc/>
    public List<int> Encode(string text, bool addBos) => Encode(text, addBos, parseSpecial: false);

    /// <summary>Encodes <paramref name="text"/>; with <paramref name="parseSpecial"/> control tokens written in the text (e.g. <c>&lt;s&gt;</c>) become their ids.</summary>
    public List<int> Encode(string text, bool addBos, bool parseSpecial)
    {
        var output = new List<int>();
        if (addBos && BosToken >= 0)
        {
            output.Add(BosToken);
        }

        bool previousSpecial = true;
        foreach (var (fragment, token) in _splitter.Split(text, parseSpecial))
        {
            if (fragment is null)
            {
                output.Add(token);
                previousSpecial = true;
                continue;
            }

            var s = (AddSpacePrefix && previousSpecial ? " " + fragment : fragment).Replace(' ', Escape);
            EncodeFragment(s, output);
            previousSpecial = false;
        }

        return output;
    }

    /// <inheritdoc/>
    public byte[] DecodeBytes(int previous, int token)
    {
        if ((uint)token >= (uint)_tokens.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(token), $"token {token} is outside the tokenizer's vocabulary of {_tokens.Length} (a model vocabulary larger than its tokenizer's?)");
        }

        var piece = _pieces[token];
        if (AddSpacePrefix && previous == BosToken && BosToken >= 0 && piece.Length > 0 && piece[0] == (byte)' ')
        {
            return piece[1..];
        }

        return piece;
    }

    private byte[] PieceBytes(int id)
    {
        var text = _tokens[id];
        switch (_types[id])
        {
            case TokenType.Control or TokenType.Unknown:
                return [];
            case TokenType.UserDefined:
                return Encoding.UTF8.GetBytes(text);
            case TokenType.Byte when text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal)
                && byte.TryParse(text.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out byte b):
                return [b];
            case TokenType.Normal:
                return Encoding.UTF8.GetBytes(text.Replace(Escape, ' '));
            default:
                return []; // unused and undefined types print nothing, as in llama.cpp
        }
    }

    private void EncodeFragment(string text, List<int> output)
    {
        // Symbols are code points: [start, start + length) in UTF-16 units, with their UTF-8 size.
        var start = new List<int>();
        var length = new List<int>();
        var bytes = new List<int>();
        for (int i = 0; i < text.Length;)
        {
            Rune.DecodeFromUtf16(text.AsSpan(i), out var r, out int consumed); // a lone surrogate reads as U+FFFD
            start.Add(i);
            length.Add(consumed);
            bytes.Add(r.Utf8SequenceLength);
            i += consumed;
        }

        int n = start.Count;
        if (n == 0)
        {
            return;
        }

        var prev = new int[n];
        var next = new int[n];
        var len = length.ToArray();
        var size = bytes.ToArray();
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // Highest score first, then leftmost (llama.cpp's llm_bigram_spm comparator).
        var queue = new PriorityQueue<(int Left, int Right, int Size), (float NegScore, int Left)>();
        void TryAdd(int left, int right)
        {
            if (left < 0 || right < 0)
            {
                return;
            }

            if (_spanLookup.TryGetValue(text.AsSpan(start[left], len[left] + len[right]), out int id))
            {
                queue.Enqueue((left, right, size[left] + size[right]), (-_scores[id], left));
            }
        }

        for (int i = 1; i < n; i++)
        {
            TryAdd(i - 1, i);
        }

        while (queue.TryDequeue(out var bigram, out _))
        {
            int l = bigram.Left, r = bigram.Right;
            if (size[l] == 0 || size[r] == 0 || size[l] + size[r] != bigram.Size)
            {
                continue;
            }

            size[l] += size[r];
            len[l] += len[r];
            size[r] = 0;
            next[l] = next[r];
            if (next[r] >= 0)
            {
                prev[next[r]] = l;
            }

            TryAdd(prev[l], l);
            TryAdd(l, next[l]);
        }

        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i >= 0; i = next[i])
        {
            if (_spanLookup.TryGetValue(text.AsSpan(start[i], len[i]), out int id))
            {
                output.Add(id);
                continue;
            }

            var s = text.Substring(start[i], len[i]);

            // Only single code points can be missing from the vocabulary (merged symbols always are tokens).
            foreach (var rune in s.EnumerateRunes())
            {
                int count = rune.EncodeToUtf8(utf8);
                for (int k = 0; k < count; k++)
                {
                    int bt = _byteTokens[utf8[k]];
                    if (bt < 0)
                    {
                        throw new InvalidOperationException($"byte 0x{utf8[k]:X2} has no byte-fallback token <0x{utf8[k]:X2}> in the vocabulary");
                    }

                    output.Add(bt);
                }
            }
        }
    }
}
