using System.Globalization;
using System.Text;

namespace KvAdaQuant.Grammar;

/// <summary>Spelling helpers for the GBNF text the JSON Schema converter emits: literals, classes, JSON string escapes, grouping.</summary>
internal static class JsonSchemaGbnfText
{
    /// <summary>A GBNF string literal matching exactly <paramref name="text"/>.</summary>
    public static string Literal(string text)
    {
        var sb = new StringBuilder(text.Length + 2);
        sb.Append('"');
        foreach (char c in text)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20 || c == 0x7F)
                    {
                        sb.Append("\\x").Append(((int)c).ToString("X2", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }

                    break;
            }
        }

        return sb.Append('"').ToString();
    }

    /// <summary>
    /// The JSON encoding of a string's contents (no quotes) in the one spelling the grammars accept:
    /// <c>\"</c>, <c>\\</c>, the short escapes for control characters that have one, <c>\u00xx</c> for the others, everything else raw.
    /// </summary>
    public static string JsonEscape(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            sb.Append(JsonEscape(c));
        }

        return sb.ToString();
    }

    /// <summary>The JSON spelling of one character inside a string.</summary>
    public static string JsonEscape(char c) => c switch
    {
        '"' => "\\\"",
        '\\' => "\\\\",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\b' => "\\b",
        '\f' => "\\f",
        _ when c < 0x20 => "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture),
        _ => c.ToString(),
    };

    /// <summary>One character as it is written inside a GBNF class <c>[...]</c>.</summary>
    public static string ClassChar(int c)
    {
        if (c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9'))
        {
            return ((char)c).ToString();
        }

        return c switch
        {
            '\\' => "\\\\",
            ']' => "\\]",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            < 0x80 => "\\x" + c.ToString("X2", CultureInfo.InvariantCulture),
            < 0x10000 => "\\u" + c.ToString("X4", CultureInfo.InvariantCulture),
            _ => "\\U" + c.ToString("X8", CultureInfo.InvariantCulture),
        };
    }

    /// <summary>Whether a GBNF expression has a <c>|</c> outside literals, classes and parentheses.</summary>
    public static bool HasTopLevelBar(string expr)
    {
        int depth = 0;
        for (int i = 0; i < expr.Length; i++)
        {
            char c = expr[i];
            if (c == '"' || c == '[')
            {
                char end = c == '"' ? '"' : ']';
                for (i++; i < expr.Length && expr[i] != end; i++)
                {
                    if (expr[i] == '\\')
                    {
                        i++;
                    }
                }
            }
            else if (c == '(')
            {
                depth++;
            }
            else if (c == ')')
            {
                depth--;
            }
            else if (c == '|' && depth == 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether a GBNF expression is one item that a quantifier may follow unparenthesized (a name, a literal, a class, a group).</summary>
    public static bool IsAtom(string expr) => expr.Length > 0 && EndOfItem(expr, 0) == expr.Length;

    /// <summary>The index just past the item (literal, class, group or name) that starts at <paramref name="start"/>.</summary>
    private static int EndOfItem(string expr, int start)
    {
        char c = expr[start];
        if (c == '"' || c == '[')
        {
            char end = c == '"' ? '"' : ']';
            int i = start + 1;
            for (; i < expr.Length && expr[i] != end; i++)
            {
                if (expr[i] == '\\')
                {
                    i++;
                }
            }

            return i + 1;
        }

        if (c == '(')
        {
            int depth = 0;
            for (int i = start; i < expr.Length; i++)
            {
                char d = expr[i];
                if (d == '"' || d == '[')
                {
                    i = EndOfItem(expr, i) - 1;
                }
                else if (d == '(')
                {
                    depth++;
                }
                else if (d == ')' && --depth == 0)
                {
                    return i + 1;
                }
            }

            return expr.Length + 1;
        }

        int j = start;
        while (j < expr.Length && (char.IsAsciiLetterOrDigit(expr[j]) || expr[j] == '-'))
        {
            j++;
        }

        return j == start ? -1 : j;
    }

    /// <summary>Whether <paramref name="s"/> is a bare rule name.</summary>
    public static bool IsName(string s)
    {
        if (s.Length == 0)
        {
            return false;
        }

        foreach (char c in s)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '-'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The expression wrapped in parentheses when it is an alternation.</summary>
    public static string Group(string expr) => HasTopLevelBar(expr) ? $"( {expr} )" : expr;

    /// <summary>The expression made a single item (for a quantifier).</summary>
    public static string Atom(string expr) => IsAtom(expr) ? expr : $"( {expr} )";

    /// <summary><paramref name="expr"/> repeated between <paramref name="min"/> and <paramref name="max"/> times (null: no upper bound); "" for exactly zero.</summary>
    public static string Repeat(string expr, int min, int? max)
    {
        if (max == 0)
        {
            return "";
        }

        string a = Atom(expr);
        return (min, max) switch
        {
            (0, null) => a + "*",
            (1, null) => a + "+",
            (0, 1) => a + "?",
            (1, 1) => expr,
            (_, null) => $"{a}{{{min},}}",
            _ when min == max => $"{a}{{{min}}}",
            _ => $"{a}{{{min},{max}}}",
        };
    }

    /// <summary>A rule name made from arbitrary text: runs of characters outside <c>[a-zA-Z0-9-]</c> become one hyphen.</summary>
    public static string SanitizeName(string text)
    {
        var sb = new StringBuilder(text.Length);
        bool dash = false;
        foreach (char c in text)
        {
            if (char.IsAsciiLetterOrDigit(c) || c == '-')
            {
                sb.Append(c);
                dash = false;
            }
            else if (!dash)
            {
                sb.Append('-');
                dash = true;
            }
        }

        return sb.Length == 0 ? "x" : sb.ToString();
    }
}
