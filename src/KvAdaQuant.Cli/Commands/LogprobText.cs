using System.Globalization;
using System.Text;
using KvAdaQuant.Engine;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Commands;

/// <summary>Log-probability entries as text and JSON for <c>generate --logprobs</c> and <c>serve</c>: each token's text, bytes and figures.</summary>
internal static class LogprobText
{
    /// <summary>The option's checked value: -1 for none, else 0..<see cref="LogprobOptions.MaxTop"/>.</summary>
    public static LogprobOptions? Options(int? top, string option)
    {
        if (top is not { } t)
        {
            return null;
        }

        return t is >= 0 and <= LogprobOptions.MaxTop
            ? new LogprobOptions(t)
            : throw new ArgumentException($"{option} must be in 0..{LogprobOptions.MaxTop} (the most likely tokens listed per position; 0 = only the chosen token's), got {t}");
    }

    /// <summary>The token's bytes as the tokenizer writes them after <paramref name="previous"/> (-1: none).</summary>
    public static byte[] Bytes(ITokenizer tokenizer, int previous, int token) => tokenizer.DecodeBytes(previous, token);

    /// <summary>The token's text (a partial UTF-8 sequence shows as U+FFFD; <see cref="Bytes"/> has the exact bytes).</summary>
    public static string Text(ITokenizer tokenizer, int previous, int token) => Encoding.UTF8.GetString(Bytes(tokenizer, previous, token));

    /// <summary>
    /// JSON objects for <c>generate --json</c>: per position the token, its text and bytes, its log-probability and the
    /// most likely tokens; <paramref name="previous"/> is the token before the first entry's.
    /// </summary>
    public static object[] Json(ITokenizer tokenizer, int previous, IReadOnlyList<TokenLogprob> entries)
    {
        var list = new object[entries.Count];
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            int prev = i == 0 ? previous : entries[i - 1].Token;
            list[i] = new
            {
                e.Token,
                Text = Text(tokenizer, prev, e.Token),
                Bytes = Bytes(tokenizer, prev, e.Token).Select(b => (int)b).ToArray(),
                e.Logprob,
                TopLogprobs = e.Top.Select(t => new
                {
                    t.Token,
                    Text = Text(tokenizer, prev, t.Token),
                    Bytes = Bytes(tokenizer, prev, t.Token).Select(b => (int)b).ToArray(),
                    t.Logprob,
                }).ToArray(),
            };
        }

        return list;
    }

    /// <summary>One line per entry for the terminal: the token's text quoted, ln p, p, and the most likely tokens.</summary>
    public static IEnumerable<string> Lines(ITokenizer tokenizer, int previous, IReadOnlyList<TokenLogprob> entries)
    {
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            int prev = i == 0 ? previous : entries[i - 1].Token;
            var line = new StringBuilder();
            line.Append(CultureInfo.InvariantCulture, $"{i,5}  {Quote(Text(tokenizer, prev, e.Token)),-16} {e.Logprob,9:F4}  p={Math.Exp(e.Logprob):F4}");
            if (e.Top.Count > 0)
            {
                line.Append("  | ");
                line.AppendJoin(", ", e.Top.Select(t => string.Create(CultureInfo.InvariantCulture, $"{Quote(Text(tokenizer, prev, t.Token))} {t.Logprob:F4}")));
            }

            yield return line.ToString();
        }
    }

    private static string Quote(string text)
    {
        var s = new StringBuilder("'");
        foreach (char c in text)
        {
            s.Append(c switch
            {
                '\n' => "\\n",
                '\t' => "\\t",
                '\r' => "\\r",
                '\'' => "\\'",
                _ => c.ToString(),
            });
        }

        return s.Append('\'').ToString();
    }
}
