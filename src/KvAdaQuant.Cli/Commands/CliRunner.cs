using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary>Runs a command body, turning expected failures into one clear line on stderr and exit code 1.</summary>
internal static class CliRunner
{
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>
    /// Runs <paramref name="body"/>. Expected failures (bad files, options, plans, data) print <c>kvaq: error: message</c>;
    /// anything else prints one line naming the exception type, with a hint (<c>KVAQ_STACK_TRACE=1</c> adds the stack
    /// trace). Both return 1.
    /// </summary>
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ModelFormatException or FileNotFoundException or DirectoryNotFoundException or ArgumentException
            or KvCacheException or NotSupportedException or InvalidDataException or FormatException or IOException or JsonException
            or UnauthorizedAccessException or KvAdaQuant.Gpu.Cuda.CudaException)
        {
            Console.Error.WriteLine($"kvaq: error: {Message(e)}");
            return 1;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"kvaq: error: unexpected {e.GetType().Name}: {Message(e)} (a bug in kvaq: please report it with the command line; {StackTraceVariable}=1 prints the stack trace)");
            if (Environment.GetEnvironmentVariable(StackTraceVariable) == "1")
            {
                Console.Error.WriteLine(e);
            }

            return 1;
        }
    }

    /// <summary>The environment variable that adds the stack trace to an unexpected error.</summary>
    public const string StackTraceVariable = "KVAQ_STACK_TRACE";

    /// <summary>
    /// <paramref name="e"/>'s message on one line, without what .NET appends for developers: the <c>(Parameter 'name')</c> of
    /// an <see cref="ArgumentException"/> (library checks name the command-line option in the text itself) and the
    /// <c>Actual value was ...</c> line of an <see cref="ArgumentOutOfRangeException"/> (shown as <c>, got ...</c>).
    /// </summary>
    internal static string Message(Exception e)
    {
        string m = e.Message;
        if (e is ArgumentOutOfRangeException { ActualValue: { } actual })
        {
            string line = new ArgumentOutOfRangeException(null, actual, string.Empty).Message;
            if (line.Length > 0 && m.EndsWith(line, StringComparison.Ordinal))
            {
                m = $"{m[..^line.Length]}, got {actual}";
            }
        }

        if (e is ArgumentException { ParamName: { Length: > 0 } name })
        {
            string suffix = new ArgumentException(string.Empty, name).Message;
            int at = m.IndexOf(suffix, StringComparison.Ordinal);
            if (suffix.Length > 0 && at >= 0)
            {
                m = m.Remove(at, suffix.Length);
            }
        }

        return m.ReplaceLineEndings(" ").Trim();
    }

    public static void PrintJson(object value) => Console.Out.WriteLine(JsonSerializer.Serialize(value, JsonOptions));
}
