using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// A test-only reading of the converter's (non-recursive) GBNF as a .NET regular expression, rules inlined: enough to check
/// what a grammar accepts independently of the GBNF parser (literals, classes, groups, alternation, quantifiers, rule names).
/// </summary>
internal static class JsonSchemaGbnfRegex
{
    public static Regex Compile(string grammar, string start = "root")
    {
        var rules = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in grammar.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int at = line.IndexOf(" ::= ", StringComparison.Ordinal);
            rules[line[..at]] = line[(at + 5)..];
        }

        return new Regex(@"\A(?:" + Translate(rules, start, []) + @")\z", RegexOptions.CultureInvariant);
    }

    private static string Translate(Dictionary<string, string> rules, string name, HashSet<string> open)
    {
        if (!open.Add(name))
        {
            throw new InvalidOperationException($"rule {name} is recursive: not a regular language");
        }

        string body = rules[name];
        var sb = new StringBuilder();
        for (int i = 0; i < body.Length;)
        {
            char c = body[i];
            if (c == ' ')
            {
                i++;
            }
            else if (c == '"')
            {
                var lit = new StringBuilder();
                for (i++; body[i] != '"'; i++)
                {
                    lit.Append(body[i] == '\\' ? Unescape(body, ref i) : body[i]);
                }

                i++;
                sb.Append("(?:").Append(Regex.Escape(lit.ToString())).Append(')');
            }
            else if (c == '[')
            {
                int start = i;
                for (i++; body[i] != ']'; i++)
                {
                    if (body[i] == '\\')
                    {
                        i++;
                    }
                }

                i++;
                sb.Append(body, start, i - start);
            }
            else if (c is '(' or ')' or '|' or '*' or '+' or '?')
            {
                sb.Append(c == '(' ? "(?:" : c.ToString());
                i++;
            }
            else if (c == '{')
            {
                int end = body.IndexOf('}', i);
                sb.Append(body, i, end - i + 1);
                i = end + 1;
            }
            else
            {
                int start = i;
                while (i < body.Length && (char.IsAsciiLetterOrDigit(body[i]) || body[i] == '-'))
                {
                    i++;
                }

                sb.Append("(?:").Append(Translate(rules, body[start..i], open)).Append(')');
            }
        }

        open.Remove(name);
        return sb.ToString();
    }

    private static char Unescape(string s, ref int i)
    {
        i++;
        switch (s[i])
        {
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case 'x':
                i += 2;
                return (char)int.Parse(s.AsSpan(i - 1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            default: return s[i];
        }
    }
}
