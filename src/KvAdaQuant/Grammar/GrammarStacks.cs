namespace KvAdaQuant.Grammar;

/// <summary>
/// The pushdown stacks of a grammar, interned: a stack is an id, its top an element position of the flattened rules
/// (always a character element: rule references are expanded into their alternatives, ends of alternatives popped) and
/// the rest its parent stack, whose top is the rule reference to return past. Id 0 is the empty stack (the start rule
/// matched: the end is allowed). Advancing a stack by a code point is memoized. Shared by a matcher and its copies; not
/// thread-safe.
/// </summary>
internal sealed class GrammarStacks
{
    /// <summary>
    /// The most (position, parent) pairs one stack may expand through at once (a bound on memory: the set of pairs seen).
    /// </summary>
    public const int MaxExpansion = 1_000_000;

    /// <summary>
    /// The most pairs all stacks together may expand through for one character (a bound on time, about a second or two
    /// here): ("a"?){0,2000} costs some millions a character and runs; ("a"{0,2000}){0,2000} is refused.
    /// </summary>
    public const int MaxCharacterWork = 30_000_000;

    /// <summary>
    /// The most stacks a text may leave open at once (a bound on memory; llama.cpp's matcher has none). Ambiguous repetition
    /// such as ("a" | "aa")* leaves a few stacks per character of a long run, so this allows texts of tens of thousands of
    /// characters there.
    /// </summary>
    public const int MaxStacks = 100_000;

    private readonly GbnfGrammar _g;
    private readonly List<int> _pos = [-1];
    private readonly List<int> _parent = [-1];
    private readonly Dictionary<long, int> _intern = [];
    private readonly Dictionary<long, int[]> _advance = [];
    private readonly HashSet<int> _seen = [];
    private readonly List<int> _found = [];
    private readonly HashSet<int> _unionSeen = [];
    private readonly List<int> _unionFound = [];
    private readonly List<(int Pos, int Parent)> _work = [];
    private readonly HashSet<long> _visited = [];
    private int _characterWork; // positions expanded for the current character (or the start), against MaxExpansion

    public GrammarStacks(GbnfGrammar grammar)
    {
        _g = grammar;
        foreach (int start in grammar.Alternatives[grammar.RootRule])
        {
            Expand(start, 0);
        }

        Initial = Take();
    }

    /// <summary>The stacks at the start: the root rule's alternatives expanded.</summary>
    public int[] Initial { get; }

    /// <summary>The character set the top of <paramref name="stack"/> (not the empty one) must match.</summary>
    public int[] TopSet(int stack) => _g.CharSets[_g.Values[_pos[stack]]];

    /// <summary>The stacks <paramref name="stack"/> becomes after <paramref name="cp"/> (empty: the code point is not allowed).</summary>
    public int[] Advance(int stack, int cp)
    {
        if (stack == 0)
        {
            return [];
        }

        long key = ((long)stack << 21) | (uint)cp;
        if (_advance.TryGetValue(key, out var result))
        {
            return result;
        }

        int pos = _pos[stack];
        if (GbnfGrammar.SetContains(TopSet(stack), cp))
        {
            Expand(pos + 1, _parent[stack]);
            result = Take();
        }
        else
        {
            result = [];
        }

        if (_advance.Count > 4_000_000)
        {
            _advance.Clear(); // a memo, not a state: bounded
        }

        _advance[key] = result;
        return result;
    }

    /// <summary>The union of <paramref name="stacks"/> advanced by <paramref name="cp"/>, each stack once.</summary>
    public int[] Advance(int[] stacks, int cp)
    {
        _characterWork = 0;
        if (stacks.Length == 1)
        {
            return Advance(stacks[0], cp);
        }

        int[]? single = null;
        int nonEmpty = 0;
        foreach (int s in stacks)
        {
            var next = Advance(s, cp);
            if (next.Length == 0)
            {
                continue;
            }

            nonEmpty++;
            single = next;
            foreach (int t in next)
            {
                if (_unionSeen.Add(t))
                {
                    _unionFound.Add(t);
                }
            }
        }

        var union = nonEmpty <= 1 ? single ?? [] : _unionFound.ToArray();
        _unionSeen.Clear();
        _unionFound.Clear();
        return union.Length <= MaxStacks ? union : throw TooAmbiguous($"one character leaves more than {MaxStacks:N0} ways to go on");
    }

    /// <summary>Whether some stack's top accepts a code point in [<paramref name="from"/>, <paramref name="to"/>] (a partial UTF-8 character).</summary>
    public bool AnyAccepts(int[] stacks, int from, int to)
    {
        foreach (int s in stacks)
        {
            if (s != 0 && GbnfGrammar.SetIntersects(TopSet(s), from, to))
            {
                return true;
            }
        }

        return false;
    }

    private int[] Take()
    {
        var result = _found.ToArray();
        _characterWork += _visited.Count;
        _found.Clear();
        _seen.Clear();
        _visited.Clear();
        return result;
    }

    // Adds to _found the leaf stacks reached from position pos over the stack parent: a character element is a leaf; a
    // rule reference pushes each of its alternatives; the end of an alternative pops back past the parent's reference
    // (or, with no parent, is the empty stack). Terminates: left recursion is refused at parse time. Iterative, with an
    // explicit work list (nested repetitions such as (("a"{0,2000}){0,2000}){0,2000} reach millions of nullable levels, which
    // recursion turned into a stack overflow), and each (position, parent) pair expanded once per Take: the same pair
    // always reaches the same leaves, so ambiguous nesting that arrives at it many ways costs it once.
    private void Expand(int pos, int parent)
    {
        _work.Add((pos, parent));
        while (_work.Count > 0)
        {
            (pos, parent) = _work[^1];
            _work.RemoveAt(_work.Count - 1);
            while (true)
            {
                if (!_visited.Add(((long)pos << 32) | (uint)parent))
                {
                    break;
                }

                if (_visited.Count > MaxExpansion || _visited.Count + _characterWork > MaxCharacterWork)
                {
                    bool one = _visited.Count > MaxExpansion;
                    _work.Clear();
                    Take();
                    throw TooAmbiguous(one
                        ? $"one way of going on leads through more than {MaxExpansion:N0} grammar positions"
                        : $"one character leads through more than {MaxCharacterWork:N0} grammar positions");
                }

                switch (_g.Kinds[pos])
                {
                    case GbnfGrammar.End:
                        if (parent == 0)
                        {
                            if (_seen.Add(0))
                            {
                                _found.Add(0);
                            }

                            break;
                        }

                        // Popped in a loop: right recursion nests as deep as the text is long.
                        pos = _pos[parent] + 1;
                        parent = _parent[parent];
                        continue;
                    case GbnfGrammar.Ref:
                        int pushed = Intern(pos, parent);
                        var alternatives = _g.Alternatives[_g.Values[pos]];
                        for (int i = alternatives.Length - 1; i >= 0; i--)
                        {
                            _work.Add((alternatives[i], pushed)); // the first alternative taken first, as the recursion did
                        }

                        break;
                    default:
                        int leaf = Intern(pos, parent);
                        if (_seen.Add(leaf))
                        {
                            _found.Add(leaf);
                        }

                        break;
                }

                break;
            }
        }
    }

    private static GrammarException TooAmbiguous(string what) =>
        new($"the grammar is too ambiguous to follow: {what} (nested repetitions of optional items, such as (\"a\"{{0,2000}}){{0,2000}}; write the repetition once: \"a\"{{0,2000}})");

    private int Intern(int pos, int parent)
    {
        long key = ((long)pos << 32) | (uint)parent;
        if (!_intern.TryGetValue(key, out int id))
        {
            id = _pos.Count;
            _pos.Add(pos);
            _parent.Add(parent);
            _intern[key] = id;
        }

        return id;
    }
}
