using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// <c>kvaq generate</c> and <c>kvaq chat</c> with <c>--grammar</c> and <c>--grammar-file</c>: the text follows the grammar
/// and equals the library's; misuse (both options, a bad grammar, a missing file) is one clear line before anything is
/// printed. With <c>--device cuda</c> a grammar is taken (the GPU run samples on the host; <c>CudaGrammarTests</c> on a
/// GPU machine).
/// </summary>
public class GrammarCliTests
{
    private const string Choice = "root ::= (\"yes\" | \"no\" | \"maybe\")";

    [Fact]
    public void Generate_with_a_grammar_gives_what_the_library_gives()
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "20", "--grammar", Choice, "--json");
        Assert.True(rc == 0, stderr);
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.Contains(json.GetProperty("text").GetString(), new[] { "yes", "no", "maybe" });
        Assert.Equal("eos", json.GetProperty("stop_reason").GetString());
        Assert.True(json.GetProperty("grammar_complete").GetBoolean());

        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        using var session = new InferenceSession(t, KvCacheFactory.Create("fp32", t.CacheLayout(256)));
        var library = new Generator(session, m.Tokenizer!).Generate("Once upon a time", 20, new Sampler { Grammar = new GrammarConstraint(GbnfGrammar.Parse(Choice), m.Tokenizer!) });
        Assert.Equal(library.Tokens, json.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()));

        // Without --json: the prompt and the text on stdout, the grammar's state in the summary line.
        (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "20", "--grammar", Choice);
        Assert.True(rc == 0, stderr);
        Assert.Equal("Once upon a time" + library.Text + Environment.NewLine, stdout);
        Assert.Contains("(eos)", stderr);
        Assert.Contains("; grammar complete, ", stderr);
    }

    [Fact]
    public void Generate_with_a_grammar_file_follows_it_sampled_too()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "code.gbnf");
        File.WriteAllText(path, "# a code: three digits, a dash, a word\nroot ::= [0-9]{3} \"-\" word \".\"\nword ::= [a-z]{1,8}\n");
        var grammar = GbnfGrammar.Parse(File.ReadAllText(path));
        foreach (string seed in new[] { "1", "2", "3" })
        {
            var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories3M-q80", "-p", "Once upon a time", "-n", "40", "--grammar-file", path, "--temperature", "0.9", "--seed", seed, "--kv", "k4v2", "--json");
            Assert.True(rc == 0, stderr);
            var json = JsonDocument.Parse(stdout).RootElement;
            string text = json.GetProperty("text").GetString()!;
            Assert.True(grammar.Matches(text), text);
            Assert.Equal("eos", json.GetProperty("stop_reason").GetString());
        }
    }

    [Fact]
    public void Misuse_is_one_line_before_anything_is_printed()
    {
        using var tmp = new TempDir();
        string bad = Path.Combine(tmp.Path, "g.gbnf");
        File.WriteAllText(bad, "root ::= item+\nitem ::= [a-z]\nword ::= item \"x\" value\n");
        string missing = Path.Combine(tmp.Path, "none.gbnf");
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--grammar", Choice, "--grammar-file", bad], "kvaq: error: --grammar and --grammar-file: give the grammar one way, not both"),
            (["--grammar-file", bad], $"kvaq: error: --grammar-file {bad}: line 3, column 19: undefined rule 'value' (referenced in rule 'word')"),
            (["--grammar", "root ::= \"abc"], "kvaq: error: --grammar: line 1, column 10: unterminated string literal in rule 'root' (no closing '\"' on its line)"),
            (["--grammar", "expr ::= expr \"+\" | \"1\"\nroot ::= expr"], "kvaq: error: --grammar: line 1, column 1: rule 'expr' is left-recursive"),
            (["--grammar", ""], "kvaq: error: --grammar: the grammar is empty"),
            (["--grammar-file", missing], $"kvaq: error: --grammar-file {missing}: no such file"),
        })
        {
            AssertMisuse(args, message);
        }
    }

    [SkippableFact]
    public void With_device_cuda_a_grammar_or_schema_is_taken_and_only_the_missing_driver_is_named()
    {
        Skip.If(KvAdaQuant.Gpu.Cuda.CudaContext.TryOpen(out var context, out _), "this machine has a CUDA device");
        context?.Dispose();
        foreach (string command in new[] { "generate", "chat" })
        {
            var (_, _, plain) = KvaqProcess.RunWithInput("hello\n", command, "-m", "stories260K", "-n", "5", "--device", "cuda");
            Assert.StartsWith("kvaq: error: --device cuda:", plain, StringComparison.Ordinal);
            foreach (string[] constraint in new[] { new[] { "--grammar", Choice }, ["--json-schema", "{\"type\": \"object\"}"] })
            {
                var (rc, stdout, stderr) = KvaqProcess.RunWithInput("hello\n", [command, "-m", "stories260K", "-n", "5", "--device", "cuda", .. constraint]);
                Assert.Equal(1, rc);
                Assert.Equal(string.Empty, stdout);
                Assert.Equal(plain, stderr);
            }
        }
    }

    [Fact]
    public void Chat_replies_each_follow_the_grammar_from_its_start()
    {
        var (rc, stdout, stderr) = KvaqProcess.RunWithInput(
            "Is the sky blue?\nIs the sun hot?\nReally?\n",
            "chat", "-m", "stories260K", "-n", "10", "--grammar", "root ::= (\"Yes\" | \"No\") \".\"", "--json");
        Assert.True(rc == 0, stderr);
        var grammar = GbnfGrammar.Parse("root ::= (\"Yes\" | \"No\") \".\"");
        var turns = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(3, turns.Length);
        Assert.All(turns, t =>
        {
            Assert.True(grammar.Matches(t.GetProperty("reply").GetString()!), t.GetProperty("reply").GetString());
            Assert.Equal("eos", t.GetProperty("stop_reason").GetString());
            Assert.True(t.GetProperty("grammar_complete").GetBoolean());
        });
    }

    /// <summary>
    /// <c>generate</c> and <c>chat</c> on stories260K with <paramref name="args"/>: exit code 1, nothing on standard output,
    /// and one line on standard error starting with <paramref name="message"/>.
    /// </summary>
    internal static void AssertMisuse(string[] args, string message)
    {
        foreach (string command in new[] { "generate", "chat" })
        {
            var (rc, stdout, stderr) = KvaqProcess.RunWithInput("hello\n", [command, "-m", "stories260K", "-n", "5", .. args]);
            Assert.Equal(1, rc);
            Assert.Equal(string.Empty, stdout);
            Assert.StartsWith(message, stderr, StringComparison.Ordinal);
            Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
    }
}
