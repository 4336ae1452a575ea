using System.Text;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// OpenAI's <c>stop</c> sequences over streamed text: the text ends before the first occurrence of any stop text (which
/// is not returned), wherever it falls within a token's piece, and text that could still be the start of a stop text is
/// held back until it is known not to be one, so the pieces streamed concatenate exactly to the text returned whole.
/// </summary>
internal sealed class StopTextFilter
{
    private readonly string[] _stops;
    private readonly int _longest;
    private readonly StringBuilder _text = new();
    private int _emitted;

    public StopTextFilter(IReadOnlyList<string> stops)
    {
        if (stops.Any(string.IsNullOrEmpty))
        {
            throw new ArgumentException("a stop text is empty", nameof(stops));
        }

        _stops = [.. stops];
        _longest = _stops.Length == 0 ? 0 : _stops.Max(s => s.Length);
    }

    /// <summary>Whether a stop text was found (the text then ends before it, and later pieces are ignored).</summary>
    public bool Stopped { get; private set; }

    /// <summary>The text so far (everything emitted).</summary>
    public string Text => _text.ToString(0, _emitted);

    /// <summary>Adds the next piece; returns the text that can be emitted now (possibly empty).</summary>
    public string Push(string piece)
    {
        if (Stopped)
        {
            return string.Empty;
        }

        int before = _text.Length;
        _text.Append(piece);
        if (_stops.Length == 0)
        {
            return Emit(_text.Length);
        }

        // A stop text not found before ends after the earlier text: look only where it could start.
        string text = _text.ToString();
        int from = Math.Max(0, before - _longest + 1);
        int first = -1;
        foreach (var stop in _stops)
        {
            int at = text.IndexOf(stop, from, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first))
            {
                first = at;
            }
        }

        if (first >= 0)
        {
            Stopped = true;
            string emit = Emit(first);
            _text.Length = first;
            return emit;
        }

        // Hold back the longest end of the text that begins a stop text.
        int hold = 0;
        for (int k = Math.Min(_longest - 1, text.Length); k > 0 && hold == 0; k--)
        {
            foreach (var stop in _stops)
            {
                if (stop.Length > k && string.CompareOrdinal(text, text.Length - k, stop, 0, k) == 0)
                {
                    hold = k;
                    break;
                }
            }
        }

        int end = text.Length - hold;
        if (end > _emitted && char.IsHighSurrogate(text[end - 1]))
        {
            end--;
        }

        return Emit(end);
    }

    /// <summary>At the end of the generation: the text still held back (none after a stop).</summary>
    public string Flush() => Stopped ? string.Empty : Emit(_text.Length);

    private string Emit(int end)
    {
        if (end <= _emitted)
        {
            return string.Empty;
        }

        string s = _text.ToString(_emitted, end - _emitted);
        _emitted = end;
        return s;
    }
}
