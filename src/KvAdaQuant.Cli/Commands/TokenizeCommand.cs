using System.CommandLine;
using System.Globalization;
using System.Text;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>kvaq tokenize</c> (llama.cpp's <c>llama-tokenize</c>): the token ids and pieces a model's tokenizer gives a text,
/// exactly what <c>generate</c> feeds for the same prompt.
/// </summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var prompt = new Option<string>("--prompt", "-p") { Description = "text to tokenize", DefaultValueFactory = _ => string.Empty };
        var file = new Option<string?>("--file", "-f") { Description = "read the text from this UTF-8 text file (instead of --prompt)" };
        var noBos = new Option<bool>("--no-bos") { Description = "do not put BOS first (generate does)" };
        var parseSpecial = new Option<bool>("--parse-special") { Description = "control tokens written in the text (e.g. </s>, <|eot_id|>) become their ids, as chat templates are fed" };
        var ids = new Option<bool>("--ids") { Description = "print only the ids, as a list: [1, 403, 407]" };
        var showCount = new Option<bool>("--show-count") { Description = "print the number of tokens last" };
        var json = CommonOptions.Json();
        var cmd = new Command("tokenize", "Show the token ids and pieces of a text under a model's tokenizer (llama-tokenize).")
        {
            model, tokenizer, prompt, file, noBos, parseSpecial, ids, showCount, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            var (text, _) = GenerateCommand.Prompt(r, prompt, file);
            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            var tokens = tok.Encode(text, addBos: !r.GetValue(noBos), parseSpecial: r.GetValue(parseSpecial));
            var pieces = new List<string>(tokens.Count);
            int previous = -1;
            foreach (int t in tokens)
            {
                var bytes = tok.DecodeBytes(previous, t);
                // Control tokens have no text of their own: named by role.
                pieces.Add(bytes.Length > 0 ? Piece(bytes) : t == tok.BosToken ? "(BOS)" : t == tok.EosToken ? "(EOS)" : "(control)");
                previous = t;
            }

            if (r.GetValue(json))
            {
                CliRunner.PrintJson(new { Model = m.Path, Text = text, Tokens = tokens, Pieces = pieces, Count = tokens.Count });
                return 0;
            }

            var ci = CultureInfo.InvariantCulture;
            if (r.GetValue(ids))
            {
                Console.Out.WriteLine("[" + string.Join(", ", tokens.Select(t => t.ToString(ci))) + "]");
            }
            else
            {
                for (int i = 0; i < tokens.Count; i++)
                {
                    Console.Out.WriteLine(string.Create(ci, $"{tokens[i],6} -> '{pieces[i]}'"));
                }
            }

            if (r.GetValue(showCount))
            {
                Console.Out.WriteLine(string.Create(ci, $"Total number of tokens: {tokens.Count}"));
            }

            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// A token's bytes as text: UTF-8 when they are whole characters, else each byte as <c>\xNN</c> (a byte-fallback
    /// token holding part of a character); control characters escaped likewise so every piece stays on its line.
    /// </summary>
    internal static string Piece(byte[] bytes)
    {
        string s;
        try
        {
            s = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return string.Concat(bytes.Select(b => $"\\x{b:X2}"));
        }

        var sb = new StringBuilder(s.Length);
        foreach (char ch in s)
        {
            if (char.IsControl(ch))
            {
                sb.Append(ch switch { '\n' => "\\n", '\t' => "\\t", '\r' => "\\r", _ => $"\\x{(int)ch:X2}" });
            }
            else
            {
                sb.Append(ch);
            }
        }

        return sb.ToString();
    }
}
