using System.Text.Json;
using KvAdaQuant.Grammar;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve --json-schema</c> / <c>--grammar</c> (llama-server's options): the server's constraint applies to every
/// request that gives none of its own, a request's own <c>grammar</c>, <c>json_schema</c> or <c>response_format</c> replaces
/// it, and a bad one stops the server before it listens, naming the option.
/// </summary>
public class ServeDefaultGrammarTests
{
    private const string Schema = """{"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}""";

    [Fact]
    public void The_servers_schema_constrains_requests_without_their_own_and_a_requests_own_replaces_it()
    {
        using var server = new ServeProcess("-m", "stories260K", "--ctx", "256", "--threads", "1", "--json-schema", Schema);
        var grammar = GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(Schema));
        foreach (string path in new[] { "/v1/completions", "/completion" })
        {
            var (status, body) = server.Post(path, """{"prompt": "Once upon a time", "max_tokens": 60, "n_predict": 60}""");
            Assert.Equal(200, status);
            string text = path == "/completion" ? body.GetProperty("content").GetString()! : body.GetProperty("choices")[0].GetProperty("text").GetString()!;
            Assert.True(grammar.Matches(text), text);
            using var doc = JsonDocument.Parse(text);
            Assert.Contains(doc.RootElement.GetProperty("answer").GetString(), new[] { "yes", "no" });
        }

        var (chatStatus, chat) = server.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Yes or no?"}], "max_tokens": 60}""");
        Assert.Equal(200, chatStatus);
        Assert.True(grammar.Matches(chat.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!));

        // The request's own grammar replaces the server's.
        var own = GbnfGrammar.Parse("root ::= [0-9]{3} \".\"");
        var (ownStatus, ownBody) = server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 20, "grammar": "root ::= [0-9]{3} \".\""}""");
        Assert.Equal(200, ownStatus);
        string ownText = ownBody.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.True(own.Matches(ownText), ownText);
        Assert.False(grammar.Matches(ownText));
    }

    [Fact]
    public void A_bad_server_grammar_or_schema_is_one_line_naming_the_option_before_it_listens()
    {
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--grammar", "root ::= \"abc"], "kvaq: error: --grammar: line 1, column 10: unterminated string literal in rule 'root'"),
            (["--json-schema", """{"type": "number", "multipleOf": 2}"""], "kvaq: error: --json-schema: /multipleOf: \"multipleOf\" is not supported"),
            (["--grammar", "root ::= \"a\"", "--json-schema", "{}"], "kvaq: error: --grammar and --json-schema: give one of"),
        })
        {
            var (rc, stdout, stderr) = KvaqProcess.Run(["serve", "-m", "stories260K", "--port", "0", .. args]);
            Assert.Equal(1, rc);
            Assert.Equal(string.Empty, stdout);
            Assert.StartsWith(message, stderr, StringComparison.Ordinal);
            Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
    }
}
