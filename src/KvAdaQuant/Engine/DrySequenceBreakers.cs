using System.Text;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// DRY's sequence breakers (<see cref="Sampler.DrySequenceBreakers"/>) as token sequences: each a head token and the
/// tokens that must follow it. A repeat that DRY penalizes does not reach back over a breaker, and a token that is a whole
/// breaker by itself is never penalized. Made from strings as llama.cpp does (<see cref="FromStrings"/>) or from token
/// sequences (<see cref="FromTokens"/>).
/// </summary>
public sealed class DrySequenceBreakers
{
    /// <summary>llama.cpp's default breakers: newline, colon, double quote, asterisk.</summary>
    public static readonly IReadOnlyList<string> Defaults = ["\n", ":", "\"", "*"];

    /// <summary>Longest breaker string used, in UTF-8 bytes (llama.cpp's limit; longer ones are cut).</summary>
    public const int MaxBytes = 40;

    /// <summary>Most tokens of a breaker after its head (llama.cpp's limit; longer tails are cut).</summary>
    public const int MaxTail = 20;

    private readonly Dictionary<int, List<int[]>> _tails = [];

    private DrySequenceBreakers()
    {
    }

    /// <summary>How many (head, tail) sequences there are.</summary>
    public int Count => _tails.Values.Sum(l => l.Count);

    /// <summary>The tails that follow <paramref name="head"/> (empty: the token is a breaker by itself), or none.</summary>
    public IReadOnlyList<int[]> TailsOf(int head) => _tails.TryGetValue(head, out var l) ? l : [];

    /// <summary>Whether <paramref name="token"/> is a whole breaker by itself (a head with an empty tail).</summary>
    public bool IsSingleTokenBreaker(int token) => _tails.TryGetValue(token, out var l) && l.Exists(t => t.Length == 0);

    /// <summary>Breakers given as token sequences: the first token is the head, the rest its tail (empty sequences are skipped).</summary>
    public static DrySequenceBreakers FromTokens(IEnumerable<IReadOnlyList<int>> sequences)
    {
        var b = new DrySequenceBreakers();
        foreach (var s in sequences)
        {
            if (s.Count > 0)
            {
                b.Add(s[0], [.. s.Skip(1).Take(MaxTail)]);
            }
        }

        return b;
    }

    /// <summary>
    /// Breakers given as text, matched on token text as llama.cpp does: every token whose text holds a breaker is a breaker
    /// by itself; a token whose text ends with the breaker's first bytes is a head, its tail the rest of the breaker
    /// tokenized (no BOS). Empty strings are skipped; strings over <see cref="MaxBytes"/> bytes are cut, tails over
    /// <see cref="MaxTail"/> tokens too. A rest that is not whole UTF-8 (a token ending inside a character) is skipped.
    /// </summary>
    /// <remarks>
    /// The result is kept per tokenizer and list (a server builds it once, not per request); it is immutable, so shared.
    /// At most <see cref="CachedLists"/> lists are kept per tokenizer (a server's clients may send any list); others are
    /// built each time.
    /// </remarks>
    public static DrySequenceBreakers FromStrings(ITokenizer tokenizer, IEnumerable<string> breakers)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        string[] given = [.. breakers];
        string key = string.Concat(given.Select(g => $"{g.Length}:{g}"));
        var cache = Cache.GetOrCreateValue(tokenizer);
        if (cache.TryGetValue(key, out var cached))
        {
            return cached;
        }

        var built = Build(tokenizer, given);
        return cache.Count < CachedLists ? cache.GetOrAdd(key, built) : built;
    }

    /// <summary>
    /// The breakers a sampler with DRY at <paramref name="multiplier"/> over <paramref name="lastN"/> tokens needs: built
    /// from <paramref name="breakers"/> on <paramref name="tokenizer"/>'s token texts (<see cref="FromStrings"/>), or null
    /// where DRY is off (as <see cref="Sampler.HasDry"/>), there is no tokenizer or no breaker.
    /// </summary>
    public static DrySequenceBreakers? ForSampler(ITokenizer? tokenizer, IReadOnlyList<string> breakers, float multiplier, int lastN) =>
        tokenizer is not null && multiplier != 0f && lastN != 0 && breakers.Count > 0 ? FromStrings(tokenizer, breakers) : null;

    /// <summary>Most breaker lists <see cref="FromStrings"/> keeps per tokenizer.</summary>
    public const int CachedLists = 16;

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<ITokenizer, System.Collections.Concurrent.ConcurrentDictionary<string, DrySequenceBreakers>> Cache = [];

    private static DrySequenceBreakers Build(ITokenizer tokenizer, string[] breakers)
    {
        var b = new DrySequenceBreakers();
        var list = breakers.Where(s => !string.IsNullOrEmpty(s)).Select(s => Encoding.UTF8.GetBytes(s) is var bytes && bytes.Length > MaxBytes ? bytes[..MaxBytes] : bytes).ToList();
        if (list.Count == 0)
        {
            return b;
        }

        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        for (int token = 0; token < tokenizer.VocabSize; token++)
        {
            byte[] word = tokenizer.DecodeBytes(-1, token);
            foreach (byte[] str in list)
            {
                if (word.AsSpan().IndexOf(str) >= 0)
                {
                    b.Add(token, []);
                    continue;
                }

                // The word's end overlaps the breaker's start: the rest of the breaker, tokenized, is the tail.
                for (int pos = word.AsSpan().IndexOf(str[0]); pos >= 0; pos = NextIndex(word, str[0], pos + 1))
                {
                    int matched = word.Length - pos;
                    if (matched >= str.Length || !word.AsSpan(pos).SequenceEqual(str.AsSpan(0, matched)))
                    {
                        continue;
                    }

                    string rest;
                    try
                    {
                        rest = strict.GetString(str, matched, str.Length - matched);
                    }
                    catch (DecoderFallbackException)
                    {
                        continue;
                    }

                    b.Add(token, [.. tokenizer.Encode(rest, addBos: false).Take(MaxTail)]);
                }
            }
        }

        return b;
    }

    /// <summary>
    /// The longest tail among the breakers whose head is <paramref name="sequence"/>[<paramref name="at"/>] and whose tail
    /// follows it there, within the sequence; -1 where none does (0: the token is a breaker by itself).
    /// </summary>
    public int LongestEndingAt(ReadOnlySpan<int> sequence, int at)
    {
        if (!_tails.TryGetValue(sequence[at], out var tails))
        {
            return -1;
        }

        int longest = -1;
        int after = sequence.Length - 1 - at; // tokens after the head
        foreach (int[] tail in tails)
        {
            if (tail.Length > longest && tail.Length <= after && sequence.Slice(at + 1, tail.Length).SequenceEqual(tail))
            {
                longest = tail.Length;
            }
        }

        return longest;
    }

    private static int NextIndex(byte[] word, byte value, int from) =>
        from >= word.Length ? -1 : word.AsSpan(from).IndexOf(value) is var i && i >= 0 ? from + i : -1;

    private void Add(int head, int[] tail)
    {
        if (!_tails.TryGetValue(head, out var l))
        {
            _tails[head] = l = [];
        }

        if (!l.Exists(t => t.AsSpan().SequenceEqual(tail)))
        {
            l.Add(tail);
        }
    }
}
