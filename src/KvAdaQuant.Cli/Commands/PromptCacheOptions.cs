using System.CommandLine;

namespace KvAdaQuant.Cli.Commands;

/// <summary>llama.cpp's prompt cache options: <c>--prompt-cache FILE</c>, <c>--prompt-cache-ro</c>, <c>--prompt-cache-all</c>.</summary>
internal sealed class PromptCacheOptions
{
    public Option<string?> File { get; } = new("--prompt-cache")
    {
        Description = "file for the prompt's KV state (llama.cpp's prompt cache): loaded when it exists, so only the prompt tokens after the cached prefix are evaluated; saved after the prompt",
    };

    public Option<bool> ReadOnly { get; } = new("--prompt-cache-ro") { Description = "load --prompt-cache's file but never write it" };

    public Option<bool> All { get; } = new("--prompt-cache-all") { Description = "save the generated tokens to --prompt-cache's file too (after the generation)" };

    public IEnumerable<Option> Options => [File, ReadOnly, All];
}
