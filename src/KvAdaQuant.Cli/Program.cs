using System.CommandLine;
using KvAdaQuant.Cli.Commands;

namespace KvAdaQuant.Cli;

/// <summary>Entry point of <c>kvaq</c>.</summary>
public static class Program
{
    /// <summary>Builds the command tree.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("kvaq: Llama-family inference with an adaptive mixed-precision quantized KV cache (KV-AdaQuant).");
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(ChatCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(PerplexityCommand.Create());
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(ConvertCommand.Create());
        root.Subcommands.Add(PullCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(AnalyzeCommand.Create());
        root.Subcommands.Add(AllocateCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(CompareCommand.Create());
        root.Subcommands.Add(VerifyDecodeCommand.Create());
        return root;
    }

    /// <summary>
    /// Runs <c>kvaq</c> with <paramref name="args"/>. A command line that does not parse (unknown or out-of-range
    /// options, a missing required one) prints its errors as <c>kvaq: error: ...</c> lines, without the help text, and
    /// exits with 1; <c>--help</c> shows usage.
    /// </summary>
    public static int Main(string[] args)
    {
        var result = BuildRoot().Parse(args);
        if (result.Action is System.CommandLine.Invocation.ParseErrorAction)
        {
            foreach (var error in result.Errors)
            {
                Console.Error.WriteLine($"kvaq: error: {ParseErrorText.Describe(error.Message)}");
            }

            if (args.Length == 0)
            {
                // Bare "kvaq": the list of commands is the useful answer.
                BuildRoot().Parse(["--help"]).Invoke();
            }

            return 1;
        }

        return result.Invoke();
    }
}
