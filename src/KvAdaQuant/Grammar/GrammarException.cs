namespace KvAdaQuant.Grammar;

/// <summary>
/// A GBNF grammar that cannot be used: its message names what is wrong, where (<c>line L, column C</c>, 1-based, of the
/// grammar text) and the rule concerned, e.g. <c>line 3, column 7: undefined rule 'value' (referenced in rule 'root')</c>.
/// </summary>
public sealed class GrammarException : FormatException
{
    /// <summary>Creates the exception; <paramref name="line"/> and <paramref name="column"/> are 0 where no place applies.</summary>
    public GrammarException(string message, int line = 0, int column = 0, string? rule = null)
        : base(line > 0 ? $"line {line}, column {column}: {message}" : message)
    {
        Line = line;
        Column = column;
        Rule = rule;
    }

    /// <summary>The 1-based line of the grammar text, or 0.</summary>
    public int Line { get; }

    /// <summary>The 1-based column (in UTF-16 characters) of the grammar text, or 0.</summary>
    public int Column { get; }

    /// <summary>The rule concerned, or null.</summary>
    public string? Rule { get; }
}
