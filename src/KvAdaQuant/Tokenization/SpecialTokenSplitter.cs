namespace KvAdaQuant.Tokenization;

/// <summary>
/// Cuts text around special tokens before the main tokenizer runs, as llama.cpp's
/// <c>tokenizer_st_partition</c> does: special tokens are tried longest first, each one splitting every
/// remaining text fragment at its occurrences. User-defined tokens are always matched; control and
/// unknown tokens only when parsing special tokens is asked for.
/// </summary>
public sealed class SpecialTokenSplitter
{
    private readonly (string Text, int Id, bool ControlOnly, bool LStrip, bool RStrip)[] _specials;

    /// <summary>Builds the splitter from <paramref name="tokens"/> and their types.</summary>
    /// <param name="tokens">token texts by id.</param>
    /// <param name="types">token types by id.</param>
    /// <param name="lstrip">ids whose match swallows whitespace on the left (HF <c>lstrip</c>), or null.</param>
    /// <param name="rstrip">ids whose match swallows whitespace on the right (HF <c>rstrip</c>), or null.</param>
    public SpecialTokenSplitter(IReadOnlyList<string> tokens, IReadOnlyList<TokenType> types, ISet<int>? lstrip = null, ISet<int>? rstrip = null)
    {
        var list = new List<(string, int, bool, bool, bool)>();
        for (int id = 0; id < tokens.Count; id++)
        {
            var t = types[id];
            if (t is TokenType.Control or TokenType.UserDefined or TokenType.Unknown && tokens[id].Length > 0)
            {
                list.Add((tokens[id], id, t != TokenType.UserDefined, lstrip?.Contains(id) ?? false, rstrip?.Contains(id) ?? false));
            }
        }

        // Longest first; equal lengths by id so the order is deterministic.
        _specials = list.OrderByDescending(s => s.Item1.Length).ThenBy(s => s.Item2).ToArray();
    }

    /// <summary>Whether any user-defined token exists (so plain text needs splitting at all).</summary>
    public bool IsEmpty => _specials.Length == 0;

    /// <summary>Fragments of <paramref name="text"/>: runs of raw text (Token = -1) and special tokens (Text = null).</summary>
    public List<(string? Text, int Token)> Split(string text, bool parseSpecial)
    {
        var fragments = new List<(string? Text, int Token)>();
        if (text.Length == 0)
        {
            return fragments;
        }

        fragments.Add((text, -1));
        foreach (var (special, id, controlOnly, lstrip, rstrip) in _specials)
        {
            if (controlOnly && !parseSpecial)
            {
                continue;
            }

            for (int i = 0; i < fragments.Count; i++)
            {
                var raw = fragments[i].Text;
                if (raw is null || raw.IndexOf(special, StringComparison.Ordinal) < 0)
                {
                    continue;
                }

                var replacement = new List<(string?, int)>();
                int start = 0;
                while (start < raw.Length)
                {
                    int match = raw.IndexOf(special, start, StringComparison.Ordinal);
                    if (match < 0)
                    {
                        replacement.Add((raw[start..], -1));
                        break;
                    }

                    int leftEnd = match;
                    if (lstrip)
                    {
                        while (leftEnd > start && char.IsWhiteSpace(raw[leftEnd - 1]))
                        {
                            leftEnd--;
                        }
                    }

                    if (leftEnd > start)
                    {
                        replacement.Add((raw[start..leftEnd], -1));
                    }

                    replacement.Add((null, id));
                    start = match + special.Length;
                    if (rstrip)
                    {
                        while (start < raw.Length && char.IsWhiteSpace(raw[start]))
                        {
                            start++;
                        }
                    }
                }

                fragments.RemoveAt(i);
                fragments.InsertRange(i, replacement);
                i += replacement.Count - 1;
            }
        }

        return fragments;
    }
}
