using System.CommandLine;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Cli.Commands;

/// <summary>Options shared by several commands.</summary>
internal static class CommonOptions
{
    public static Option<string> Model() => new("--model", "-m")
    {
        Description = $"model file, folder or bare name (looked up in $KVAQ_MODELS, then ../shared/models); default {ModelPaths.DefaultModel}",
        DefaultValueFactory = _ => ModelPaths.DefaultModel,
    };

    public static Option<string?> Tokenizer() => new("--tokenizer")
    {
        Description = "tokenizer file (default: the one in or beside the model)",
    };

    public static Option<bool> Json() => new("--json")
    {
        Description = "print machine-readable JSON to stdout",
    };

    public static Option<int> Threads() => new("--threads", "-t")
    {
        Description = "worker threads (0 = all cores)",
        DefaultValueFactory = _ => 0,
    };

    public static Option<string> Kv() => new("--kv")
    {
        Description = "KV cache: fp32 or fp16",
        DefaultValueFactory = _ => "fp32",
    };
}
