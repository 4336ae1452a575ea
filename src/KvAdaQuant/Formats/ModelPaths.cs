namespace KvAdaQuant.Formats;

/// <summary>
/// Resolves model and data names. A path that exists is used as is; a bare name such as
/// <c>stories3M-q80</c> is looked up in <c>$KVAQ_MODELS</c>, then <c>$KVAQ_FIXTURES/models</c>, then
/// <c>../shared/models</c> from the working directory (and from the folders above it and above the program).
/// </summary>
public static class ModelPaths
{
    /// <summary>The default model of the CLI.</summary>
    public const string DefaultModel = "stories3M-q80";

    /// <summary>The fixtures folder (<c>$KVAQ_FIXTURES</c> or the nearest <c>shared</c> folder beside an ancestor), or null.</summary>
    public static string? FixturesRoot()
    {
        var env = Environment.GetEnvironmentVariable("KVAQ_FIXTURES");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env))
        {
            return Path.GetFullPath(env);
        }

        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            {
                var candidate = Path.Combine(d.FullName, "shared");
                if (Directory.Exists(Path.Combine(candidate, "models")))
                {
                    return candidate;
                }
            }
        }

        return null;
    }

    /// <summary>Folders searched for bare model names, in order.</summary>
    public static IEnumerable<string> ModelFolders()
    {
        var env = Environment.GetEnvironmentVariable("KVAQ_MODELS");
        if (!string.IsNullOrEmpty(env))
        {
            yield return env;
        }

        if (FixturesRoot() is { } root)
        {
            yield return Path.Combine(root, "models");
        }
    }

    /// <summary>Resolves <paramref name="nameOrPath"/> to a model file or HF folder; throws naming the places searched.</summary>
    public static string ResolveModel(string nameOrPath)
    {
        if (File.Exists(nameOrPath))
        {
            return Path.GetFullPath(nameOrPath);
        }

        if (Directory.Exists(nameOrPath))
        {
            return PickInFolder(Path.GetFullPath(nameOrPath)) ?? throw new FileNotFoundException($"{nameOrPath}: folder holds no model file (.gguf, .bin, or config.json with .safetensors)");
        }

        var searched = new List<string>();
        foreach (var folder in ModelFolders())
        {
            var dir = Path.Combine(folder, nameOrPath);
            searched.Add(dir);
            if (Directory.Exists(dir) && PickInFolder(dir) is { } f)
            {
                return f;
            }

            var file = Path.Combine(folder, nameOrPath);
            if (File.Exists(file))
            {
                return file;
            }

            foreach (var ext in new[] { ".gguf", ".bin" })
            {
                if (File.Exists(file + ext))
                {
                    return file + ext;
                }
            }
        }

        throw new FileNotFoundException($"model '{nameOrPath}' not found: not a file or folder, and not in {(searched.Count == 0 ? "any model folder (set KVAQ_MODELS)" : string.Join(", ", searched))}");
    }

    /// <summary>Resolves a data file: a path, or a path relative to the fixtures' <c>data</c> folder.</summary>
    public static string ResolveData(string nameOrPath)
    {
        if (File.Exists(nameOrPath))
        {
            return Path.GetFullPath(nameOrPath);
        }

        if (FixturesRoot() is { } root)
        {
            var p = Path.Combine(root, "data", nameOrPath);
            if (File.Exists(p))
            {
                return p;
            }
        }

        if (Directory.Exists(nameOrPath))
        {
            throw new FileNotFoundException($"data file '{nameOrPath}' is a folder; give a file in it");
        }

        throw new FileNotFoundException($"data file '{nameOrPath}' not found (as a path or under the fixtures' data folder)");
    }

    private static string? PickInFolder(string dir)
    {
        if (File.Exists(Path.Combine(dir, "config.json")) && Directory.EnumerateFiles(dir, "*.safetensors").Any())
        {
            return dir;
        }

        var name = Path.GetFileName(dir);
        foreach (var ext in new[] { ".gguf", ".bin" })
        {
            var same = Path.Combine(dir, name + ext);
            if (File.Exists(same))
            {
                return same;
            }
        }

        return Directory.EnumerateFiles(dir, "*.gguf").Order().FirstOrDefault()
            ?? Directory.EnumerateFiles(dir, "*.bin").Where(f => !Path.GetFileName(f).StartsWith("tok", StringComparison.Ordinal)).Order().FirstOrDefault();
    }
}
