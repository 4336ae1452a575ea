using System.Globalization;
using System.Text;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// BPE by merge rank, as llama.cpp's <c>llm_tokenizer_bpe</c> and Hugging Face's BPE model do. Two text schemes:
/// byte-level (GPT-2, Llama 3, Qwen2, SmolLM: UTF-8 bytes mapped to printable characters, split into words by a
/// <see cref="BpePreTokenizer"/>) and SentencePiece-style (HF <c>tokenizer.json</c> of Llama 2: spaces become
/// U+2581, byte fallback to <c>&lt;0xXX&gt;</c>). Within each word the adjacent pair with the lowest merge rank is
/// merged (leftmost on ties) until no pair has a rank.
/// </summary>
public sealed class MergesBpeTokenizer : ITokenizer
{
    private const char Escape = '\u2581';

    private readonly string[] _tokens;
    private readonly TokenType[] _types;
    private readonly Dictionary<string, int> _lookup;
    private readonly Dictionary<string, int> _ranks;
    private readonly string[] _merges;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _rankLookup;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _spanLookup;
    private readonly byte[][] _pieces;
    private readonly int[] _byteTokens = new int[256];
    private readonly SpecialTokenSplitter _splitter;

    /// <summary>Creates the tokenizer.</summary>
    /// <param name="source">file the vocabulary came from (for error messages).</param>
    /// <param name="tokens">token texts by id.</param>
    /// <param name="types">token types by id, or null for all normal.</param>
    /// <param name="merges">merges in rank order, each "left right".</param>
    /// <param name="options">how text is prepared and words are found.</param>
    public MergesBpeTokenizer(string source, string[] tokens, TokenType[]? types, IReadOnlyList<string> merges, MergesBpeOptions options)
    {
        if (types is not null && types.Length != tokens.Length)
        {
            throw new Formats.ModelFormatException(source, $"tokenizer has {tokens.Length} tokens but {types.Length} token types");
        }

        _tokens = tokens;
        _types = types ?? Enumerable.Repeat(TokenType.Normal, tokens.Length).ToArray();
        Options = options;
        BosToken = options.Bos;
        EosToken = options.Eos;
        _lookup = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
        {
            if (!_lookup.TryAdd(tokens[i], i))
            {
                throw new Formats.ModelFormatException(source, $"duplicate token '{tokens[i]}' at ids {_lookup[tokens[i]]} and {i}");
            }
        }

        _merges = [.. merges];
        _ranks = new Dictionary<string, int>(merges.Count, StringComparer.Ordinal);
        for (int i = 0; i < merges.Count; i++)
        {
            var m = merges[i];
            int space = m.Length > 1 ? m.IndexOf(' ', 1) : -1;
            if (space < 0)
            {
                throw new Formats.ModelFormatException(source, $"merge {i} '{m}' is not two tokens separated by a space");
            }

            _ranks.TryAdd(m, i); // a repeated merge keeps its first (best) rank
        }

        _rankLookup = _ranks.GetAlternateLookup<ReadOnlySpan<char>>();
        _spanLookup = _lookup.GetAlternateLookup<ReadOnlySpan<char>>();
        for (int b = 0; b < 256; b++)
        {
            _byteTokens[b] = _lookup.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }

        _pieces = new byte[tokens.Length][];
        for (int i = 0; i < tokens.Length; i++)
        {
            _pieces[i] = PieceBytes(i);
        }

        _splitter = new SpecialTokenSplitter(tokens, _types, options.LStrip, options.RStrip);
    }

    /// <summary>How this tokenizer prepares text.</summary>
    public MergesBpeOptions Options { get; }

    /// <summary>The merges in rank order, each "left right", as given.</summary>
    public IReadOnlyList<string> Merges => _merges;

    /// <inheritdoc/>
    public int VocabSize => _tokens.Length;

    /// <inheritdoc/>
    public int BosToken { get; }

    /// <inheritdoc/>
    public int EosToken { get; }

    /// <summary>Type of a token.</summary>
    public TokenType TypeOf(int token) => _types[token];

    /// <summary>Text of a token as stored in the vocabulary.</summary>
    public string TokenText(int token) => _tokens[token];

    /// <summary>Id of the token whose text is <paramref name="text"/>, or -1.</summary>
    public int TokenId(string text) => _lookup.GetValueOrDefault(text, -1);

    /// <inheritdoc/>
    public List<int> Encode(string text, bool addBos) => Encode(text, addBos, parseSpecial: false);

    /// <summary>Encodes <paramref name="text"/>; with <paramref name="parseSpecial"/> control tokens written in the text become their ids.</summary>
    public List<int> Encode(string text, bool addBos, bool parseSpecial)
    {
        var output = new List<int>();
        if (addBos && BosToken >= 0)
        {
            output.Add(BosToken);
        }

        bool first = true;
        bool previousSpecial = true;
        foreach (var (fragment, token) in _splitter.Split(text, parseSpecial))
        {
            if (fragment is null)
            {
                output.Add(token);
                previousSpecial = true;
                first = false;
                continue;
            }

            var s = fragment;
            bool prefix = Options.SpacePrefix switch
            {
                SpacePrefixScheme.Always => previousSpecial,
                SpacePrefixScheme.First => first,
                _ => false,
            };
            if (prefix && !(Options.ByteLevel && s.Length > 0 && s[0] == ' '))
            {
                s = " " + s;
            }

            if (Options.EscapeSpaces)
            {
                s = s.Replace(' ', Escape);
            }

            var words = Options.PreTokenizer is { } pre ? pre.Split(s) : [s];
            foreach (var word in words)
            {
                EncodeWord(Options.ByteLevel ? ByteLevelEncoding.Encode(word) : word, output);
            }

            previousSpecial = false;
            first = false;
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
        if (Options.EscapeSpaces && Options.SpacePrefix != SpacePrefixScheme.Never && previous == BosToken && BosToken >= 0
            && piece.Length > 0 && piece[0] == (byte)' ')
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
            case TokenType.Byte when TryParseByteToken(text, out byte b):
                return [b];
            case TokenType.Normal:
                if (!Options.ByteLevel && TryParseByteToken(text, out byte fb))
                {
                    return [fb]; // tokenizer.json marks byte-fallback tokens as normal
                }

                return Options.ByteLevel ? ByteLevelEncoding.Decode(text) : Encoding.UTF8.GetBytes(text.Replace(Escape, ' '));
            default:
                return [];
        }
    }

    private static bool TryParseByteToken(string text, out byte b)
    {
        b = 0;
        return text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>'
            && byte.TryParse(text.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out b);
    }

    private void EncodeWord(string word, List<int> output)
    {
        if (word.Length == 0)
        {
            return;
        }

        if (Options.IgnoreMerges && _lookup.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }

        // Symbols are code points of the (byte-level) word.
        var start = new List<int>();
        var len = new List<int>();
        for (int i = 0; i < word.Length;)
        {
            Rune.DecodeFromUtf16(word.AsSpan(i), out _, out int consumed);
            start.Add(i);
            len.Add(consumed);
            i += consumed;
        }

        int n = start.Count;
        var length = len.ToArray();
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // Lowest rank first, then leftmost (llama.cpp's llm_bigram_bpe comparator).
        var queue = new PriorityQueue<(int Left, int Right, int LeftLength, int RightLength), (int Rank, int Left)>();
        var keyBuffer = new char[word.Length + 1];
        void TryAdd(int left, int right)
        {
            if (left < 0 || right < 0)
            {
                return;
            }

            // Key "left right" built in a reused buffer: no string per candidate pair.
            word.AsSpan(start[left], length[left]).CopyTo(keyBuffer);
            keyBuffer[length[left]] = ' ';
            word.AsSpan(start[right], length[right]).CopyTo(keyBuffer.AsSpan(length[left] + 1));
            if (_rankLookup.TryGetValue(keyBuffer.AsSpan(0, length[left] + 1 + length[right]), out int rank))
            {
                queue.Enqueue((left, right, length[left], length[right]), (rank, left));
            }
        }

        for (int i = 1; i < n; i++)
        {
            TryAdd(i - 1, i);
        }

        while (queue.TryDequeue(out var bigram, out _))
        {
            int l = bigram.Left, r = bigram.Right;
            if (length[l] != bigram.LeftLength || length[r] != bigram.RightLength || next[l] != r)
            {
                continue; // outdated: one side has merged since
            }

            length[l] += length[r];
            length[r] = 0;
            next[l] = next[r];
            if (next[r] >= 0)
            {
                prev[next[r]] = l;
            }

            TryAdd(prev[l], l);
            TryAdd(l, next[l]);
        }

        for (int i = 0; i >= 0; i = next[i])
        {
            if (_spanLookup.TryGetValue(word.AsSpan(start[i], length[i]), out int id))
            {
                output.Add(id);
                continue;
            }

            var s = word.Substring(start[i], length[i]);

            if (Options.ByteLevel)
            {
                // llama.cpp looks each UTF-8 byte of the symbol up as a one-byte token (found for ASCII only).
                foreach (byte b in Encoding.UTF8.GetBytes(s))
                {
                    if (b < 128 && _lookup.TryGetValue(((char)b).ToString(), out int single))
                    {
                        output.Add(single);
                    }
                }
            }
            else if (Options.ByteFallback)
            {
                foreach (byte b in Encoding.UTF8.GetBytes(s))
                {
                    if (_byteTokens[b] >= 0)
                    {
                        output.Add(_byteTokens[b]);
                    }
                    else if (Options.Unknown >= 0)
                    {
                        output.Add(Options.Unknown);
                    }
                }
            }
            else if (Options.Unknown >= 0)
            {
                output.Add(Options.Unknown);
            }
        }
    }
}
