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
    private readonly GbnfGrammar _g;
    private readonly List<int> _pos = [-1];
    private readonly List<int> _parent = [-1];
    private readonly Dictionary<long, int> _intern = [];
    private readonly Dictionary<long, int[]> _advance = [];
    private readonly HashSet<int> _seen = [];
    private readonly List<int> _found = [];
    private readonly HashSet<int> _unionSeen = [];
    private readonly List<int> _unionFound = [];

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
        return union;
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
        _found.Clear();
        _seen.Clear();
        return result;
    }

    // Adds to _found the leaf stacks reached from position pos over the stack parent: a character element is a leaf; a
    // rule reference pushes each of its alternatives; the end of an alternative pops back past the parent's reference
    // (or, with no parent, is the empty stack). Terminates: left recursion is refused at parse time.
    private void Expand(int pos, int parent)
    {
        while (true)
        {
            switch (_g.Kinds[pos])
            {
                case GbnfGrammar.End:
                    if (parent == 0)
                    {
                        if (_seen.Add(0))
                        {
                            _found.Add(0);
                        }

                        return;
                    }

                    // Popped in a loop, not recursively: right recursion nests as deep as the text is long.
                    pos = _pos[parent] + 1;
                    parent = _parent[parent];
                    continue;
                case GbnfGrammar.Ref:
                    int pushed = Intern(pos, parent);
                    foreach (int start in _g.Alternatives[_g.Values[pos]])
                    {
                        Expand(start, pushed);
                    }

                    return;
                default:
                    int leaf = Intern(pos, parent);
                    if (_seen.Add(leaf))
                    {
                        _found.Add(leaf);
                    }

                    return;
            }
        }
    }

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
