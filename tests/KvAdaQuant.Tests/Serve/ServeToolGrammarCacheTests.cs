using System.Text.Json;
using KvAdaQuant.Cli.Serve;
using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <see cref="ServedModel.WithTools"/>'s cache of compiled tool grammars on stories260K: the same tools (spaced any way)
/// give the same parsed grammar without a second build, and the same reply as a grammar compiled afresh; another
/// tool_choice is another entry; the cache keeps at most 16, the least recently used dropped; a schema the converter
/// cannot follow is a 400 naming the tool and is not kept.
/// </summary>
public sealed class ServeToolGrammarCacheTests : IDisposable
{
    private const string Schema = """{"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}""";

    private readonly KvAdaQuant.Model.LlamaModel _model;
    private readonly Transformer _transformer;
    private readonly ServedModel _served;
    private readonly CompletionRequest _defaults = new(null, null, null, 0f, 0, 1f, 0, [], Stream: false);

    public ServeToolGrammarCacheTests()
    {
        _model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        _transformer = new Transformer(_model, 1);
        var session = new InferenceSession(_transformer, KvCacheFactory.Create(KvPlan.Parse("fp32", _model.Config.Layers), _transformer.CacheLayout(512)));
        _served = new ServedModel("m", "m", session, "fp32", "cpu", _model.Tokenizer!, ChatTemplate.None, _defaults);
    }

    public void Dispose()
    {
        _served.Dispose();
        _transformer.Dispose();
        _model.Dispose();
    }

    private CompletionRequest Request(string extra, string name = "get_weather", string schema = Schema)
    {
        using var doc = JsonDocument.Parse($$$"""{"messages": [{"role": "user", "content": "Weather?"}], "tools": [{"type": "function", "function": {"name": "{{{name}}}", "parameters": {{{schema}}}}}], "max_tokens": 160, "seed": 3, "temperature": 0.8{{{extra}}}}""");
        return CompletionRequest.Parse(doc.RootElement, chat: true, _defaults);
    }

    [Fact]
    public void The_same_tools_reuse_the_compiled_grammar_and_give_the_same_reply()
    {
        var first = _served.WithTools(Request(", \"tool_choice\": \"required\""));
        Assert.Equal(1, _served.ToolGrammars.Builds);
        Assert.NotNull(first.ParsedGrammar);
        Assert.Equal("tools", first.GrammarField);

        // The same tools, spaced otherwise: the same entry, the same parsed grammar object.
        var second = _served.WithTools(Request(", \"tool_choice\": \"required\"", schema: Schema.Replace(": ", ":", StringComparison.Ordinal).Replace(", ", ",\n  ", StringComparison.Ordinal)));
        Assert.Equal(1, _served.ToolGrammars.Builds);
        Assert.Same(first.ParsedGrammar, second.ParsedGrammar);
        Assert.Equal(first.Grammar, second.Grammar);

        // As compiled without the cache.
        var fresh = Request(", \"tool_choice\": \"required\"").WithToolFormat(_served.ToolFormat, _served.Tokenizer);
        Assert.Equal(fresh.Grammar, first.Grammar);

        // The same reply (same seed), from the cached grammar and the fresh one.
        string a = Generate(first), b = Generate(second), c = Generate(fresh);
        Assert.Equal(a, b);
        Assert.Equal(a, c);
        var call = Assert.Single(_served.ToolFormat.Parse(a, first.Tools!).ToolCalls);
        Assert.Equal("get_weather", call.Name);

        // Another tool_choice (auto: "a call or a response") is another grammar, compiled once.
        var auto = _served.WithTools(Request(string.Empty));
        var autoAgain = _served.WithTools(Request(string.Empty));
        Assert.Equal(2, _served.ToolGrammars.Builds);
        Assert.NotSame(first.ParsedGrammar, auto.ParsedGrammar);
        Assert.Same(auto.ParsedGrammar, autoAgain.ParsedGrammar);

        // none: no grammar, the schemas checked once.
        var none = _served.WithTools(Request(", \"tool_choice\": \"none\""));
        _ = _served.WithTools(Request(", \"tool_choice\": \"none\""));
        Assert.Null(none.ParsedGrammar);
        Assert.Equal(3, _served.ToolGrammars.Builds);
    }

    [Fact]
    public void The_cache_keeps_the_16_most_recently_used()
    {
        for (int i = 0; i < 20; i++)
        {
            _ = _served.WithTools(Request(string.Empty, name: $"tool{i}"));
            if (i >= 4)
            {
                _ = _served.WithTools(Request(string.Empty, name: "tool0")); // used again and again: kept
            }
        }

        Assert.Equal(20, _served.ToolGrammars.Builds);
        Assert.Equal(16, _served.ToolGrammars.Count);
        _ = _served.WithTools(Request(string.Empty, name: "tool0"));
        Assert.Equal(20, _served.ToolGrammars.Builds);
        _ = _served.WithTools(Request(string.Empty, name: "tool1")); // the least recently used: dropped, built again
        Assert.Equal(21, _served.ToolGrammars.Builds);
        Assert.Equal(16, _served.ToolGrammars.Count);
    }

    [Fact]
    public void A_schema_the_grammar_cannot_follow_is_a_400_naming_the_tool_and_is_not_kept()
    {
        foreach (string choice in new[] { string.Empty, ", \"tool_choice\": \"none\"", ", \"tool_choice\": \"required\"" })
        {
            var e = Assert.Throws<ServeRequestException>(() => _served.WithTools(Request(choice, schema: """{"type": "object", "not": {}}""")));
            Assert.Equal("tools", e.Param);
            Assert.StartsWith("tools[0].function.parameters: ", e.Message, StringComparison.Ordinal);
        }

        Assert.Equal(0, _served.ToolGrammars.Count);
    }

    private string Generate(CompletionRequest request)
    {
        var prompt = _served.PromptTokens(request);
        Assert.True(_served.Gate.Wait(0));
        var slots = _served.TakeForChoices(prompt, 1);
        try
        {
            return _served.GenerateChoices(slots, [prompt], request, CancellationToken.None)[0].Text;
        }
        finally
        {
            foreach (var slot in slots)
            {
                _served.Release(slot);
            }
        }
    }
}
