using System.Text;

namespace KvAdaQuant.Grammar;

/// <summary>
/// Where a text stands in a <see cref="GbnfGrammar"/>, as llama.cpp's grammar: a set of pushdown stacks (each the
/// elements left to match, deduplicated), advanced one Unicode code point at a time. Input comes as text or as UTF-8
/// bytes, which may end in the middle of a character (a byte-fallback token such as <c>&lt;0xE2&gt;</c>): the partial
/// character is carried over, and allowed only while some stack accepts a character that starts with those bytes.
/// Invalid UTF-8 (a stray continuation byte, an overlong form, a surrogate) is rejected. A rejected input leaves the
/// matcher as it was. Not thread-safe; <see cref="Clone"/> makes an independent copy cheaply.
/// </summary>
public sealed class GrammarMatcher
{
    private readonly GrammarStacks _stacks;
    private State _state;

    /// <summary>A matcher at the start of <paramref name="grammar"/>.</summary>
    public GrammarMatcher(GbnfGrammar grammar)
    {
        ArgumentNullException.ThrowIfNull(grammar);
        Grammar = grammar;
        _stacks = new GrammarStacks(grammar);
        _state = new State(_stacks.Initial, default);
    }

    private GrammarMatcher(GrammarMatcher other)
    {
        Grammar = other.Grammar;
        _stacks = other._stacks;
        _state = other._state;
    }

    /// <summary>The grammar.</summary>
    public GbnfGrammar Grammar { get; }

    /// <summary>Whether the text so far is a whole sentence of the grammar (the end may come now): some stack is empty and no character is half read.</summary>
    public bool IsComplete => _state.Utf8.Remaining == 0 && Array.IndexOf(_state.Stacks, 0) >= 0;

    /// <summary>Whether some character may still follow (some stack is not empty).</summary>
    public bool CanContinue => _state.Stacks.Any(s => s != 0);

    /// <summary>Whether the last input ended in the middle of a UTF-8 character.</summary>
    public bool HasPartialCharacter => _state.Utf8.Remaining > 0;

    internal GrammarStacks Stacks => _stacks;

    internal State Current
    {
        get => _state;
        set => _state = value;
    }

    /// <summary>Back to the start of the grammar.</summary>
    public void Reset() => _state = new State(_stacks.Initial, default);

    /// <summary>An independent copy at the same point (the interned stacks are shared, so it is cheap).</summary>
    public GrammarMatcher Clone() => new(this);

    /// <summary>Accepts <paramref name="text"/> if the grammar allows it here (returns true); else returns false and stays put.</summary>
    public bool TryAccept(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryAccept(Encoding.UTF8.GetBytes(text));
    }

    /// <summary>Accepts the UTF-8 <paramref name="bytes"/> if the grammar allows them here (returns true); else returns false and stays put.</summary>
    public bool TryAccept(ReadOnlySpan<byte> bytes)
    {
        var s = _state;
        if (!Advance(ref s, bytes))
        {
            return false;
        }

        _state = s;
        return true;
    }

    /// <summary>Whether <see cref="TryAccept(ReadOnlySpan{byte})"/> would accept <paramref name="bytes"/>, without moving.</summary>
    public bool CanAccept(ReadOnlySpan<byte> bytes)
    {
        var s = _state;
        return Advance(ref s, bytes);
    }

    internal bool Advance(ref State s, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
        {
            if (!Step(ref s, b))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Advances <paramref name="s"/> by one byte; false (and <paramref name="s"/> unspecified) where the grammar or UTF-8 refuses it.</summary>
    internal bool Step(ref State s, byte b)
    {
        var u = s.Utf8;
        if (u.Remaining > 0)
        {
            if ((b & 0xC0) != 0x80)
            {
                return false;
            }

            u = new Utf8(((u.Value << 6) | (b & 0x3F)), u.Remaining - 1, u.Length);
            if (u.Remaining > 0)
            {
                s = new State(s.Stacks, u);
                return Feasible(s);
            }

            int cp = u.Value;
            int min = u.Length switch { 2 => 0x80, 3 => 0x800, _ => 0x10000 };
            if (cp < min || cp > GbnfGrammar.MaxCodePoint || cp is >= 0xD800 and <= 0xDFFF)
            {
                return false;
            }

            return Char(ref s, cp);
        }

        if (b < 0x80)
        {
            return Char(ref s, b);
        }

        int remaining = b switch
        {
            >= 0xC2 and <= 0xDF => 1,
            >= 0xE0 and <= 0xEF => 2,
            >= 0xF0 and <= 0xF4 => 3,
            _ => 0,
        };
        if (remaining == 0)
        {
            return false;
        }

        s = new State(s.Stacks, new Utf8(b & (0x3F >> remaining), remaining, remaining + 1));
        return Feasible(s);
    }

    private bool Char(ref State s, int cp)
    {
        var next = _stacks.Advance(s.Stacks, cp);
        s = new State(next, default);
        return next.Length > 0;
    }

    // With a character half read: whether some stack accepts a code point that starts with those bits.
    private bool Feasible(State s)
    {
        // The code points whose UTF-8 form starts with the bytes read, overlong forms and surrogates (ED A0..ED BF: no
        // character, whatever follows) excluded.
        int shift = 6 * s.Utf8.Remaining;
        int from = Math.Max(s.Utf8.Value << shift, s.Utf8.Length switch { 2 => 0x80, 3 => 0x800, _ => 0x10000 });
        int to = Math.Min((s.Utf8.Value << shift) | ((1 << shift) - 1), GbnfGrammar.MaxCodePoint);
        return Any(from, Math.Min(to, 0xD7FF)) || Any(Math.Max(from, 0xE000), to);

        bool Any(int a, int b) => a <= b && _stacks.AnyAccepts(s.Stacks, a, b);
    }

    internal readonly record struct Utf8(int Value, int Remaining, int Length);

    internal readonly record struct State(int[] Stacks, Utf8 Utf8)
    {
        public bool IsComplete => Utf8.Remaining == 0 && Array.IndexOf(Stacks, 0) >= 0;
    }
}
