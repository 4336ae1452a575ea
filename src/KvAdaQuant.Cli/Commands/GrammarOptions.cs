using System.CommandLine;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>--grammar TEXT</c> and <c>--grammar-file FILE</c> of <c>generate</c> and <c>chat</c> (llama.cpp's): a GBNF grammar
/// the generated text must follow (<see cref="GbnfGrammar"/>). One or the other; a grammar that does not parse is an
/// error naming the option, the line and the column.
/// </summary>
internal sealed class GrammarOptions
{
    public Option<string?> Grammar { get; } = new("--grammar")
    {
        Description = "constrain the generated text to this GBNF grammar (llama.cpp's syntax; the start rule is 'root'); EOS only once it is complete",
    };

    public Option<string?> GrammarFile { get; } = new("--grammar-file") { Description = "read the GBNF grammar from this UTF-8 file (instead of --grammar)" };

    /// <summary>The options, to add to a command.</summary>
    public IEnumerable<Option> All => [Grammar, GrammarFile];

    /// <summary>Whether either option was given.</summary>
    public bool Given(ParseResult r) => r.GetValue(Grammar) is not null || r.GetValue(GrammarFile) is not null;

    /// <summary>The grammar the options give, or null; an error names the option and, for a bad grammar, the line and column.</summary>
    public GbnfGrammar? Parse(ParseResult r)
    {
        string? text = r.GetValue(Grammar);
        string? path = r.GetValue(GrammarFile);
        if (text is not null && path is not null)
        {
            throw new ArgumentException("--grammar and --grammar-file: give the grammar one way, not both");
        }

        string option = "--grammar";
        if (path is not null)
        {
            if (!File.Exists(path))
            {
                throw new ArgumentException(Directory.Exists(path) ? $"--grammar-file {path}: is a folder; give the grammar's GBNF file" : $"--grammar-file {path}: no such file");
            }

            text = File.ReadAllText(path);
            option = $"--grammar-file {path}";
        }

        if (text is null)
        {
            return null;
        }

        try
        {
            return GbnfGrammar.Parse(text);
        }
        catch (GrammarException e)
        {
            throw new ArgumentException($"{option}: {e.Message}", e);
        }
    }
}
