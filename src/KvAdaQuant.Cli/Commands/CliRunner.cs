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

    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ModelFormatException or FileNotFoundException or DirectoryNotFoundException or ArgumentException
            or KvCacheException or NotSupportedException or InvalidDataException or FormatException or IOException or JsonException
            or KvAdaQuant.Gpu.Cuda.CudaException)
        {
            Console.Error.WriteLine($"kvaq: error: {e.Message}");
            return 1;
        }
    }

    public static void PrintJson(object value) => Console.Out.WriteLine(JsonSerializer.Serialize(value, JsonOptions));
}
