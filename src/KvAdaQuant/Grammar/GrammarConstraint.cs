using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Grammar;

/// <summary>
/// A grammar applied to one sequence's sampling (<see cref="Engine.Sampler.Grammar"/>): which tokens may come next,
/// and the chosen one accepted. A token is allowed when all of its bytes (as <see cref="ITokenizer.DecodeBytes"/> gives
/// them, so the grammar sees exactly the text <c>generate</c> prints: the first token after BOS without the
/// SentencePiece space) are accepted; a token that ends in the middle of a UTF-8 character is allowed while the
/// character can still be completed. EOS (and the end-of-turn token given to <see cref="Reset"/>) is allowed exactly
/// when the grammar is complete; other tokens without bytes (control tokens) never are. Where no token is allowed (a
/// dead end: the grammar needs a character no token spells, or is complete with no EOS), <see cref="IsDeadEnd"/> is set.
/// The token bytes are computed and sorted once per tokenizer (shared by every constraint over it: a server's requests
/// do not redo them), so that the full mask shares work between tokens with a common prefix and drops a whole prefix at
/// its first refused byte. Not thread-safe: one per sequence being generated.
/// </summary>
/// <remarks>
/// A lazy constraint (built with <see cref="GrammarTriggers"/>, as llama.cpp's lazy grammar) allows every token, EOS
/// included, until a trigger appears: a trigger word in the text generated since <see cref="Reset"/> (it may span tokens;
/// the grammar then reads the text from the word's first byte through the end of the token that completes it, so the word
/// is the start of a sentence of the grammar), or a trigger token (the grammar reads the token's text, as llama.cpp's does:
/// none for a control token, whose sentence then starts after it). From then on it constrains as a plain one. A token that
/// would complete a trigger word is allowed only if the grammar accepts the text from the word's start to the token's end:
/// a token that carries the word's last bytes and then text the grammar refuses (say <c>&lt;tool_call&gt;</c> and a space
/// where the grammar wants a line break) is masked, so the model spells the trigger with other tokens or not at all; so is
/// a trigger token whose text the grammar refuses; the free text before the trigger is never constrained.
/// </remarks>
public sealed class GrammarConstraint
{
    private readonly ITokenizer _tokenizer;
    private readonly GrammarMatcher _matcher;
    // Per tokenizer, its token tables by previous token (immutable once built, so shared across threads).
    private static readonly ConditionalWeakTable<ITokenizer, ConcurrentDictionary<int, TokenTable>> Tables = [];
    private readonly TokenTable _table;
    private TokenTable? _afterBos;
    private bool _first;
    private int _previous = -1;
    private int _endOfTurn = -1;
    private GrammarMatcher.State[] _depth = new GrammarMatcher.State[16];

    // Lazy: the triggers, their words' bytes, and the free text's last bytes (at most the longest word less one), length
    // and first non-whitespace byte (long.MaxValue: none yet).
    private readonly GrammarTriggers? _triggers;
    private readonly byte[][] _words = [];
    private readonly byte[] _tail = [];
    private int _tailLength;
    private long _freeLength;
    private long _firstNonSpace = long.MaxValue;
    private byte[] _scratch = [];
    private bool _active = true;

    /// <summary>A constraint at the start of <paramref name="grammar"/> for the tokens of <paramref name="tokenizer"/>.</summary>
    public GrammarConstraint(GbnfGrammar grammar, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(grammar);
        ArgumentNullException.ThrowIfNull(tokenizer);
        _tokenizer = tokenizer;
        _matcher = new GrammarMatcher(grammar);
        // A token's bytes after any token but BOS (the SentencePiece space is dropped only after BOS).
        int other = tokenizer.BosToken == 0 ? Math.Min(1, tokenizer.VocabSize - 1) : 0;
        _table = SharedTable(tokenizer, other == tokenizer.BosToken ? -1 : other);
    }

    /// <summary>
    /// A lazy constraint (see the remarks): free until one of <paramref name="triggers"/> appears, then
    /// <paramref name="grammar"/> from the trigger on; null <paramref name="triggers"/>: a plain constraint.
    /// </summary>
    public GrammarConstraint(GbnfGrammar grammar, ITokenizer tokenizer, GrammarTriggers? triggers)
        : this(grammar, tokenizer)
    {
        if (triggers is null)
        {
            return;
        }

        _words = triggers.WordBytes();
        _tail = new byte[Math.Max(0, _words.Select(w => w.Length).DefaultIfEmpty(0).Max() - 1)];
        _triggers = triggers;
        _active = false;
    }

    /// <summary>The triggers of a lazy constraint, or null.</summary>
    public GrammarTriggers? Triggers => _triggers;

    /// <summary>Whether the grammar constrains the tokens now: always for a plain constraint, for a lazy one once a trigger appeared.</summary>
    public bool IsActive => _active;

    /// <summary>For a lazy constraint that is active: the number of tokens accepted before the one that brought the trigger; else -1.</summary>
    public int TriggeredAfter { get; private set; } = -1;

    /// <summary>The grammar.</summary>
    public GbnfGrammar Grammar => _matcher.Grammar;

    /// <summary>Whether the tokens accepted so far make a whole sentence (EOS is allowed).</summary>
    public bool IsComplete => !_active || _matcher.IsComplete;

    /// <summary>Whether more text may follow.</summary>
    public bool CanContinue => !_active || _matcher.CanContinue;

    /// <summary>Whether the last mask found no allowed token (the generation then ends, stop reason <c>grammar_dead_end</c>).</summary>
    public bool IsDeadEnd { get; private set; }

    /// <summary>Whether an end token (EOS or end of turn) was accepted.</summary>
    public bool IsEnded { get; private set; }

    /// <summary>Tokens accepted since <see cref="Reset"/> (end tokens included).</summary>
    public int AcceptedTokens { get; private set; }

    /// <summary>Full masks computed since <see cref="Reset"/> (the sampled token was refused, or a check was asked for).</summary>
    public int MaskCount { get; private set; }

    /// <summary>
    /// Back to the start of the grammar, for a generation whose prompt ends with <paramref name="previousToken"/> (-1: none;
    /// BOS: the first token's bytes are taken as after BOS); <paramref name="endOfTurn"/> (-1: none) is allowed, like EOS,
    /// once the grammar is complete.
    /// </summary>
    public void Reset(int previousToken = -1, int endOfTurn = -1)
    {
        _matcher.Reset();
        _previous = previousToken;
        _first = true;
        _endOfTurn = endOfTurn;
        IsDeadEnd = false;
        IsEnded = false;
        AcceptedTokens = 0;
        MaskCount = 0;
        _active = _triggers is null;
        _tailLength = 0;
        _freeLength = 0;
        _firstNonSpace = long.MaxValue;
        TriggeredAfter = -1;
    }

    /// <summary>The token that ends the generation at a dead end: EOS, else the end-of-turn token, else -1.</summary>
    public int StopToken => _tokenizer.EosToken >= 0 ? _tokenizer.EosToken : _endOfTurn;

    /// <summary>Whether <paramref name="token"/> may come next.</summary>
    public bool IsAllowed(int token)
    {
        if (!_active)
        {
            return IsAllowedFree(token);
        }

        if (IsEnd(token))
        {
            return !IsEnded && _matcher.IsComplete;
        }

        var table = Table();
        if ((uint)token >= (uint)table.Bytes.Length || table.Bytes[token].Length == 0 || IsEnded)
        {
            return false;
        }

        var s = _matcher.Current;
        return _matcher.Advance(ref s, table.Bytes[token]);
    }

    /// <summary>
    /// Sets <paramref name="allowed"/>[t] for every token t that may come next (tokens past the tokenizer's vocabulary:
    /// false) and returns how many may.
    /// </summary>
    public int ComputeAllowed(Span<bool> allowed)
    {
        MaskCount++;
        allowed.Clear();
        int count = 0;
        if (IsEnded)
        {
            return 0;
        }

        if (!_active)
        {
            int n = Math.Min(allowed.Length, _tokenizer.VocabSize);
            for (int t = 0; t < n; t++)
            {
                if (IsAllowedFree(t))
                {
                    allowed[t] = true;
                    count++;
                }
            }

            IsDeadEnd = count == 0;
            return count;
        }

        if (_matcher.IsComplete)
        {
            count += AllowEnd(allowed, _tokenizer.EosToken) + AllowEnd(allowed, _endOfTurn);
        }

        var table = Table();
        var order = table.Order;
        var lcp = table.Lcp;
        if (_depth.Length < table.MaxLength + 1)
        {
            _depth = new GrammarMatcher.State[table.MaxLength + 1];
        }

        var depth = _depth;
        depth[0] = _matcher.Current;
        int valid = 0; // depth[0..valid] are the states after the previous token's first bytes
        int i = 0;
        while (i < order.Length)
        {
            int t = order[i];
            var b = table.Bytes[t];
            int k = Math.Min(lcp[i], valid);
            bool dead = false;
            for (; k < b.Length; k++)
            {
                var s = depth[k];
                if (!_matcher.Step(ref s, b[k]))
                {
                    // Every token that starts with b[0..k] is refused too: skip them.
                    valid = k;
                    int j = i + 1;
                    while (j < order.Length && lcp[j] > k)
                    {
                        j++;
                    }

                    i = j;
                    dead = true;
                    break;
                }

                depth[k + 1] = s;
            }

            if (!dead)
            {
                valid = b.Length;
                if (t < allowed.Length && !IsEnd(t))
                {
                    allowed[t] = true;
                    count++;
                }

                i++;
            }
        }

        if (count == 0)
        {
            IsDeadEnd = true;
        }

        return count;
    }

    /// <summary>Accepts <paramref name="token"/> (it must be allowed: <see cref="IsAllowed"/>).</summary>
    public void Accept(int token)
    {
        if (!_active && !IsEnd(token))
        {
            AcceptFree(token);
        }
        else if (IsEnd(token))
        {
            if (IsEnded || (_active && !_matcher.IsComplete))
            {
                throw new InvalidOperationException($"the grammar does not allow the end (token {token}) here: the text so far is not a whole sentence of it");
            }

            IsEnded = true;
        }
        else
        {
            var table = Table();
            if ((uint)token >= (uint)table.Bytes.Length || table.Bytes[token].Length == 0 || IsEnded || !_matcher.TryAccept(table.Bytes[token]))
            {
                throw new InvalidOperationException($"the grammar does not allow token {token} here");
            }
        }

        _first = false;
        _previous = token;
        AcceptedTokens++;
    }

    // Lazy and not yet triggered: whether the token may come (all may, but a trigger token whose text, or one that completes
    // a trigger word with text, the grammar refuses).
    private bool IsAllowedFree(int token)
    {
        if (IsEnd(token))
        {
            return !IsEnded;
        }

        var table = Table();
        if ((uint)token >= (uint)table.Bytes.Length || IsEnded)
        {
            return false;
        }

        if (IsTrigger(token))
        {
            var t = _matcher.Current;
            return _matcher.Advance(ref t, table.Bytes[token]); // its text (none for a control token) starts the grammar
        }

        int start = FindWord(table.Bytes[token], out var text);
        if (start < 0)
        {
            return true;
        }

        var s = _matcher.Current;
        return _matcher.Advance(ref s, text[start..]);
    }

    // Lazy and not yet triggered: a token (not an end) taken as free text, or as the trigger.
    private void AcceptFree(int token)
    {
        var table = Table();
        if ((uint)token >= (uint)table.Bytes.Length || IsEnded)
        {
            throw new InvalidOperationException($"the grammar does not allow token {token} here");
        }

        var bytes = table.Bytes[token];
        if (IsTrigger(token))
        {
            if (!_matcher.TryAccept(bytes))
            {
                throw new InvalidOperationException($"the grammar does not allow token {token} here: the trigger token's text is not the start of a sentence of the grammar");
            }

            Activate();
            return;
        }

        int start = FindWord(bytes, out var text);
        if (start >= 0)
        {
            if (!_matcher.TryAccept(text[start..]))
            {
                throw new InvalidOperationException($"the grammar does not allow token {token} here: the text from its trigger word on is not the start of a sentence of the grammar");
            }

            Activate();
            return;
        }

        for (int i = 0; i < bytes.Length && _firstNonSpace == long.MaxValue; i++)
        {
            if (!IsSpace(bytes[i]))
            {
                _firstNonSpace = _freeLength + i;
            }
        }

        _freeLength += bytes.Length;
        int keep = Math.Min(_tail.Length, text.Length);
        text[^keep..].CopyTo(_tail);
        _tailLength = keep;
    }

    private void Activate()
    {
        _active = true;
        TriggeredAfter = AcceptedTokens;
    }

    // A trigger token, where it counts.
    private bool IsTrigger(int token) =>
        _triggers!.Tokens.Contains(token) && (!_triggers.AtStart || _firstNonSpace == long.MaxValue);

    // The free text's tail and then bytes, in text; the start in it of the first trigger word that counts, or -1.
    private int FindWord(ReadOnlySpan<byte> bytes, out Span<byte> text)
    {
        int n = _tailLength + bytes.Length;
        if (_scratch.Length < n)
        {
            _scratch = new byte[Math.Max(n, 2 * _scratch.Length)];
        }

        text = _scratch.AsSpan(0, n);
        _tail.AsSpan(0, _tailLength).CopyTo(text);
        bytes.CopyTo(text[_tailLength..]);
        if (_words.Length == 0 || (_triggers!.AtStart && _firstNonSpace < _freeLength - _tailLength))
        {
            return -1; // no words, or text other than whitespace already came before the tail
        }

        int best = -1;
        foreach (var w in _words)
        {
            int i = text.IndexOf(w);
            if (i >= 0 && (best < 0 || i < best))
            {
                best = i;
            }
        }

        if (best < 0 || !_triggers.AtStart)
        {
            return best;
        }

        // At the start only: nothing but whitespace before the word (the tail's bytes are in _firstNonSpace already).
        if (_firstNonSpace < _freeLength - _tailLength + best)
        {
            return -1;
        }

        for (int i = _tailLength; i < best; i++)
        {
            if (!IsSpace(text[i]))
            {
                return -1;
            }
        }

        return best;
    }

    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r';

    private bool IsEnd(int token) => token >= 0 && (token == _tokenizer.EosToken || token == _endOfTurn);

    private static int AllowEnd(Span<bool> allowed, int token)
    {
        if (token < 0 || token >= allowed.Length || allowed[token])
        {
            return 0;
        }

        allowed[token] = true;
        return 1;
    }

    private TokenTable Table() => _first && _previous >= 0 && _previous == _tokenizer.BosToken
        ? _afterBos ??= SharedTable(_tokenizer, _tokenizer.BosToken)
        : _table;

    private static TokenTable SharedTable(ITokenizer tokenizer, int previous) =>
        Tables.GetValue(tokenizer, _ => new ConcurrentDictionary<int, TokenTable>()).GetOrAdd(previous, p => new TokenTable(tokenizer, p));

    // Every token's bytes after one previous token, and the tokens with bytes sorted by them (with the length of the
    // prefix each shares with the one before) for the mask.
    private sealed class TokenTable
    {
        public TokenTable(ITokenizer tokenizer, int previous)
        {
            int n = tokenizer.VocabSize;
            Bytes = new byte[n][];
            for (int t = 0; t < n; t++)
            {
                Bytes[t] = tokenizer.DecodeBytes(previous, t);
            }

            var bytes = Bytes;
            Order = Enumerable.Range(0, n).Where(t => bytes[t].Length > 0).ToArray();
            Array.Sort(Order, (a, b) => bytes[a].AsSpan().SequenceCompareTo(bytes[b]) is var c && c != 0 ? c : a.CompareTo(b));
            Lcp = new int[Order.Length];
            for (int i = 1; i < Order.Length; i++)
            {
                Lcp[i] = bytes[Order[i]].AsSpan().CommonPrefixLength(bytes[Order[i - 1]]);
            }

            MaxLength = Order.Length == 0 ? 0 : Order.Max(t => bytes[t].Length);
        }

        public byte[][] Bytes { get; }

        public int[] Order { get; }

        public int[] Lcp { get; }

        public int MaxLength { get; }
    }
}
