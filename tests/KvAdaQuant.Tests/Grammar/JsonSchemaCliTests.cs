using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// <c>kvaq generate</c> and <c>kvaq chat</c> with <c>--json-schema</c> / <c>-j</c> and <c>--json-schema-file</c>: the text is JSON
/// valid under the schema and equals the library's run with the converted grammar; misuse (two constraint options, a
/// refused schema, a missing file, the GPU) is one line naming the option (and the keyword's path) before anything is printed.
/// </summary>
public class JsonSchemaCliTests
{
    private const string Schema = """
        {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "count": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["answer", "count"]}
        """;

    private static void AssertValid(string text)
    {
        using var doc = JsonDocument.Parse(text);
        Assert.Contains(doc.RootElement.GetProperty("answer").GetString(), new[] { "yes", "no" });
        Assert.InRange(doc.RootElement.GetProperty("count").GetInt32(), 1, 9);
        Assert.Equal(2, doc.RootElement.EnumerateObject().Count());
    }

    [Fact]
    public void Generate_with_a_schema_gives_valid_json_and_what_the_library_gives()
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "200", "-j", Schema, "--json");
        Assert.True(rc == 0, stderr);
        var json = JsonDocument.Parse(stdout).RootElement;
        AssertValid(json.GetProperty("text").GetString()!);
        Assert.Equal("eos", json.GetProperty("stop_reason").GetString());
        Assert.True(json.GetProperty("grammar_complete").GetBoolean());

        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        using var session = new InferenceSession(t, KvCacheFactory.Create("fp32", t.CacheLayout(512)));
        var grammar = GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(Schema));
        var library = new Generator(session, m.Tokenizer!).Generate("Once upon a time", 200, new Sampler { Grammar = new GrammarConstraint(grammar, m.Tokenizer!) });
        Assert.Equal(library.Tokens, json.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()));
    }

    [Fact]
    public void A_schema_file_sampled_and_chat_replies_follow_it()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "reply.schema.json");
        File.WriteAllText(path, Schema);
        foreach (string seed in new[] { "1", "2" })
        {
            var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "200", "--json-schema-file", path, "--temperature", "0.9", "--seed", seed, "--json");
            Assert.True(rc == 0, stderr);
            AssertValid(JsonDocument.Parse(stdout).RootElement.GetProperty("text").GetString()!);
        }

        var (chatRc, chatOut, chatErr) = KvaqProcess.RunWithInput("Is the sky blue?\nHow many suns?\n", "chat", "-m", "stories260K", "-n", "200", "--json-schema", Schema, "--json");
        Assert.True(chatRc == 0, chatErr);
        var turns = chatOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(2, turns.Length);
        Assert.All(turns, turn =>
        {
            AssertValid(turn.GetProperty("reply").GetString()!);
            Assert.True(turn.GetProperty("grammar_complete").GetBoolean());
        });
    }

    [Fact]
    public void Misuse_is_one_line_naming_the_option_and_the_path()
    {
        using var tmp = new TempDir();
        string bad = Path.Combine(tmp.Path, "bad.json");
        File.WriteAllText(bad, """{"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}}""");
        string missing = Path.Combine(tmp.Path, "none.json");
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--json-schema", Schema, "--grammar", "root ::= \"x\""], "kvaq: error: --grammar and --json-schema: give one of --grammar, --grammar-file, --json-schema, --json-schema-file"),
            (["-j", Schema, "--json-schema-file", bad], "kvaq: error: --json-schema and --json-schema-file: give one of --grammar, --grammar-file, --json-schema, --json-schema-file"),
            (["--json-schema-file", bad], $"kvaq: error: --json-schema-file {bad}: /properties/n/multipleOf: \"multipleOf\" is not supported"),
            (["--json-schema", "{\"type\": \"string\", \"format\": \"email\"}"], "kvaq: error: --json-schema: /format: format \"email\" is not supported (supported: date, time, date-time, uuid)"),
            (["--json-schema", "{type: object}"], "kvaq: error: --json-schema: (root): the schema is not valid JSON: "),
            (["--json-schema-file", missing], $"kvaq: error: --json-schema-file {missing}: no such file"),
        })
        {
            GrammarCliTests.AssertMisuse(args, message);
        }
    }
}
