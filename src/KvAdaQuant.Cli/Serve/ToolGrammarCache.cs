using KvAdaQuant.Grammar;

namespace KvAdaQuant.Cli.Serve;

/// <summary>A tool list's compiled constraint: the grammar's text, its parse and the lazy grammar's triggers (all null: none, the schemas only checked).</summary>
internal sealed record ToolGrammar(string? Text, GbnfGrammar? Parsed, GrammarTriggers? Triggers);

/// <summary>
/// The tool grammars of recent requests (<see cref="ServedModel.WithTools"/>), so that a client sending the same tools again
/// (an agent loop does, every turn) does not convert their schemas and parse the grammar again: per key (the tools as
/// compact JSON, the tool format, <c>tool_choice</c> and <c>parallel_tool_calls</c>) the <see cref="ToolGrammar"/>; at most
/// <see cref="Capacity"/> entries, the least recently used dropped first. A build that throws is not kept. Thread-safe.
/// </summary>
internal sealed class ToolGrammarCache(int capacity = 16)
{
    private readonly Dictionary<string, LinkedListNode<(string Key, ToolGrammar Value)>> _entries = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Key, ToolGrammar Value)> _recent = new();
    private readonly Lock _lock = new();
    private int _builds;

    /// <summary>The most entries kept.</summary>
    public int Capacity { get; } = capacity >= 1 ? capacity : throw new ArgumentOutOfRangeException(nameof(capacity), "a cache holds at least one entry");

    /// <summary>How many times a grammar was built (a key not in the cache), failed builds included.</summary>
    public int Builds => Volatile.Read(ref _builds);

    /// <summary>The entries now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>The entry of <paramref name="key"/>, built by <paramref name="build"/> (outside the lock) when it is not kept.</summary>
    public ToolGrammar GetOrAdd(string key, Func<ToolGrammar> build)
    {
        lock (_lock)
        {
            if (_entries.TryGetValue(key, out var node))
            {
                _recent.Remove(node);
                _recent.AddFirst(node);
                return node.Value.Value;
            }
        }

        Interlocked.Increment(ref _builds);
        var value = build();
        lock (_lock)
        {
            if (_entries.TryGetValue(key, out var node))
            {
                return node.Value.Value; // built meanwhile by another request: keep one
            }

            _entries[key] = _recent.AddFirst((key, value));
            if (_entries.Count > Capacity)
            {
                _entries.Remove(_recent.Last!.Value.Key);
                _recent.RemoveLast();
            }

            return value;
        }
    }
}
