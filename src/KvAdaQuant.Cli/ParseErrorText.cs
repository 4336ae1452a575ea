using System.Globalization;
using System.Text.RegularExpressions;

namespace KvAdaQuant.Cli;

/// <summary>
/// Rewrites System.CommandLine's parse errors that name .NET types ("as expected type 'System.Int32'") into what a
/// user types: "--max-tokens 'abc' is not an integer (-2147483648 to 2147483647)". Messages it does not recognise pass
/// through unchanged.
/// </summary>
public static partial class ParseErrorText
{
    /// <summary>The message to print for <paramref name="message"/>.</summary>
    public static string Describe(string message)
    {
        var m = CannotParse().Match(message);
        if (!m.Success)
        {
            return message;
        }

        string value = m.Groups["value"].Value;
        string option = m.Groups["option"].Value;
        string type = m.Groups["type"].Value;
        string? expected = type switch
        {
            "System.Int32" => Integer(int.MinValue, int.MaxValue),
            "System.Int64" => Integer(long.MinValue, long.MaxValue),
            "System.Single" or "System.Double" => "a number, e.g. 0.8 or 1e-3",
            "System.Boolean" => "true or false",
            _ => null,
        };
        if (expected is null)
        {
            return message;
        }

        return $"{option} '{value}' is not {expected}";
    }

    private static string Integer(long min, long max) =>
        string.Create(CultureInfo.InvariantCulture, $"an integer ({min} to {max})");

    [GeneratedRegex(@"^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']+)' as expected type '(?<type>[\w.]+)'\.?$", RegexOptions.Singleline)]
    private static partial Regex CannotParse();
}
