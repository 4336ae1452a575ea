using System.Text.Json;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Tests;

/// <summary>Paths to the read-only fixtures in ../shared (or $KVAQ_FIXTURES).</summary>
public static class Fixtures
{
    public static string Root => ModelPaths.FixturesRoot() ?? throw new InvalidOperationException("fixtures folder ../shared not found; set KVAQ_FIXTURES");

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    public static string Stories260K => Path("models", "stories260K", "stories260K.bin");

    public static string Stories260KTokenizer => Path("models", "stories260K", "tok512.bin");

    public static string Stories3M => Path("models", "stories3M-q80", "stories3M-q80.bin");

    public static string Stories3MTokenizer => Path("models", "stories3M-q80", "tok4096.bin");

    public static JsonElement ReferenceGreedy(string model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path("models", "reference-greedy.json")));
        return doc.RootElement.GetProperty(model).Clone();
    }
}
