using System.Text.Json;
using CsCheck;
using KvAdaQuant.Engine;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// <see cref="ChatToolFormat"/>: which format a model's template gets, how tools, calls and results are rendered in each
/// format, the grammar of a valid call, and replies read back (malformed ones kept as text).
/// </summary>
public class ChatToolFormatTests
{
    private const string WeatherSchema = """{"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"]}""";

    private static readonly ChatTool Weather = new("get_weather", "The weather in a city", WeatherSchema);

    private static readonly ChatTool Time = new("get_time", null, """{"type": "object", "properties": {}}""");

    private static readonly ChatTool[] Tools = [Weather, Time];

    // A conversation with a call and its result.
    private static readonly ChatMessage[] RoundTrip =
    [
        new("system", "Be brief."),
        new("user", "Weather in Oslo?"),
        new("assistant", string.Empty) { ToolCalls = [new ChatToolCall("call_1", "get_weather", """{"city":"Oslo"}""")] },
        new("tool", "Sunny, 21 C") { ToolCallId = "call_1" },
    ];

    [Theory]
    [InlineData(null, "chatml", "generic")]
    [InlineData("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", "chatml", "generic")]
    [InlineData("<|im_start|>system{% if tools %}<tools>{{ tools }}</tools> <tool_call>{% endif %}", "chatml", "hermes")]
    [InlineData("<|start_header_id|>{{ role }}<|end_header_id|>{% if tools %}ipython{% endif %}<|eot_id|>", "llama3", "llama3")]
    [InlineData("<|start_header_id|>{{ role }}<|end_header_id|><|eot_id|>", "llama3", "generic")] // Llama 3.0: no tool role
    [InlineData("<|im_start|> <tool_call>", "none", "generic")] // the template in use is not ChatML
    public void The_format_follows_the_models_template(string? jinja, string template, string expected) =>
        Assert.Equal(expected, ChatToolFormat.Detect(jinja, ChatTemplate.Parse(template)).Name);

    [Fact]
    public void Generic_puts_the_tools_in_the_system_message_and_writes_calls_and_results_as_json()
    {
        string prompt = ChatToolFormat.Generic.Render(ChatTemplate.ChatMl, RoundTrip, Tools);
        Assert.StartsWith("<|im_start|>system\nBe brief.\n\nYou can call these tools", prompt, StringComparison.Ordinal);
        Assert.Contains("""{"name":"get_weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":""", prompt, StringComparison.Ordinal);
        Assert.Contains("""{"name":"get_time","parameters":{"type":"object","properties":{}}}""", prompt, StringComparison.Ordinal);
        Assert.Contains("{\"tool_call\": {\"name\": <tool name>, \"arguments\": {...}}}", prompt, StringComparison.Ordinal);
        Assert.Contains("""<|im_start|>assistant""" + "\n" + """{"tool_call":{"name":"get_weather","arguments":{"city":"Oslo"}}}<|im_end|>""", prompt, StringComparison.Ordinal);
        Assert.Contains("""<|im_start|>user""" + "\n" + """{"tool_response":{"tool":"get_weather","tool_call_id":"call_1","content":"Sunny, 21 C"}}<|im_end|>""", prompt, StringComparison.Ordinal);
        Assert.EndsWith("<|im_start|>assistant\n", prompt, StringComparison.Ordinal);

        // Parallel calls: the tool_calls array; no tools offered: only the conversation's calls and results are rewritten.
        Assert.Contains("{\"tool_calls\": [{\"name\": <tool name>", ChatToolFormat.Generic.Render(ChatTemplate.None, RoundTrip, Tools, parallel: true), StringComparison.Ordinal);
        string bare = ChatToolFormat.Generic.Render(ChatTemplate.None, RoundTrip, []);
        Assert.Equal("""Be brief.Weather in Oslo?{"tool_call":{"name":"get_weather","arguments":{"city":"Oslo"}}}{"tool_response":{"tool":"get_weather","tool_call_id":"call_1","content":"Sunny, 21 C"}}""", bare);
    }

    [Fact]
    public void Llama3_puts_the_tools_in_the_first_user_message_and_results_in_ipython_turns()
    {
        string prompt = ChatToolFormat.Llama3.Render(ChatTemplate.Llama3, RoundTrip, [Weather]);
        Assert.StartsWith("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions", prompt, StringComparison.Ordinal);
        Assert.Contains("Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.", prompt, StringComparison.Ordinal);
        Assert.Contains("{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",", prompt, StringComparison.Ordinal);
        Assert.Contains("\n\nWeather in Oslo?<|eot_id|>", prompt, StringComparison.Ordinal);
        Assert.Contains("""<|start_header_id|>assistant<|end_header_id|>""" + "\n\n" + """{"name":"get_weather","parameters":{"city":"Oslo"}}<|eot_id|>""", prompt, StringComparison.Ordinal);
        Assert.Contains("<|start_header_id|>ipython<|end_header_id|>\n\nSunny, 21 C<|eot_id|>", prompt, StringComparison.Ordinal);
        Assert.EndsWith("<|start_header_id|>assistant<|end_header_id|>\n\n", prompt, StringComparison.Ordinal);

        // Forced on another template (serve --tool-format llama3), a result is a user turn.
        Assert.EndsWith("<|im_start|>user\nSunny, 21 C<|im_end|>\n<|im_start|>assistant\n", ChatToolFormat.Llama3.Render(ChatTemplate.ChatMl, RoundTrip, [Weather]), StringComparison.Ordinal);
        Assert.EndsWith("{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Oslo\"}}Sunny, 21 C", ChatToolFormat.Llama3.Render(ChatTemplate.None, RoundTrip, []), StringComparison.Ordinal);
    }

    [Fact]
    public void Hermes_puts_the_tools_in_the_system_message_and_results_in_one_tool_response_turn()
    {
        ChatMessage[] messages =
        [
            new("user", "Weather and time?"),
            new("assistant", "Let me look.")
            {
                ToolCalls = [new ChatToolCall("call_1", "get_weather", """{"city": "Oslo"}"""), new ChatToolCall("call_2", "get_time", "{}")],
            },
            new("tool", "Sunny") { ToolCallId = "call_1" },
            new("tool", "12:00") { ToolCallId = "call_2" },
        ];
        string prompt = ChatToolFormat.Hermes.Render(ChatTemplate.ChatMl, messages, Tools);
        Assert.StartsWith("<|im_start|>system\n# Tools\n\nYou may call one or more functions", prompt, StringComparison.Ordinal);
        Assert.Contains("<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",", prompt, StringComparison.Ordinal);
        Assert.Contains("</tools>\n\nFor each function call, return a json object", prompt, StringComparison.Ordinal);
        Assert.Contains(
            "<|im_start|>assistant\nLet me look.\n<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\":\"get_time\",\"arguments\":{}}\n</tool_call><|im_end|>",
            prompt,
            StringComparison.Ordinal);
        Assert.Contains("<|im_start|>user\n<tool_response>\nSunny\n</tool_response>\n<tool_response>\n12:00\n</tool_response><|im_end|>\n<|im_start|>assistant\n", prompt, StringComparison.Ordinal);
    }

    [Fact]
    public void A_tool_message_alone_is_refused_by_the_template()
    {
        var e = Assert.Throws<ArgumentException>(() => ChatTemplate.ChatMl.Render([new ChatMessage("tool", "x")], addGenerationPrompt: true));
        Assert.Contains("ChatToolFormat", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => ChatTemplate.ChatMl.Render([new ChatMessage("ipython", "x")], addGenerationPrompt: true));
    }

    [Fact]
    public void Generic_replies_are_read_back()
    {
        var one = ChatToolFormat.Generic.Parse("""  {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}} """, Tools);
        Assert.Null(one.Content);
        var call = Assert.Single(one.ToolCalls);
        Assert.Equal("get_weather", call.Name);
        Assert.Equal("""{"city":"Oslo","days":2}""", call.Arguments);
        Assert.Matches("^call_[A-Za-z0-9]{24}$", call.Id);

        var many = ChatToolFormat.Generic.Parse("""{"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}]}""", Tools);
        Assert.Equal(["get_time", "get_weather"], many.ToolCalls.Select(c => c.Name));
        Assert.Equal("""{"city":"Rome"}""", many.ToolCalls[1].Arguments);
        Assert.NotEqual(many.ToolCalls[0].Id, many.ToolCalls[1].Id);

        var text = ChatToolFormat.Generic.Parse("""{"response": "It is sunny."}""", Tools);
        Assert.Equal("It is sunny.", text.Content);
        Assert.Empty(text.ToolCalls);
    }

    [Theory]
    [InlineData("Once upon a time")]
    [InlineData("""{"tool_call": {"name": "get_weather", "arguments": {"city": "Os""")] // cut off
    [InlineData("""{"tool_call": {"name": "launch_rocket", "arguments": {}}}""")] // not offered
    [InlineData("""{"tool_call": {"name": "get_weather", "arguments": [1]}}""")] // arguments not an object
    [InlineData("""{"tool_calls": [{"name": "get_time", "arguments": {}}, {"arguments": {}}]}""")]
    [InlineData("""{"something": "else"}""")]
    public void A_malformed_generic_reply_is_all_content(string reply)
    {
        var parsed = ChatToolFormat.Generic.Parse(reply, Tools);
        Assert.Equal(reply, parsed.Content);
        Assert.Empty(parsed.ToolCalls);
    }

    [Fact]
    public void Llama3_and_hermes_replies_are_read_back()
    {
        var llama = ChatToolFormat.Llama3.Parse("""<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}""", Tools);
        Assert.Equal("""{"city":"Oslo"}""", Assert.Single(llama.ToolCalls).Arguments);
        Assert.Null(llama.Content);
        Assert.Equal("The weather is fine.", ChatToolFormat.Llama3.Parse("The weather is fine.", Tools).Content);
        Assert.Empty(ChatToolFormat.Llama3.Parse("""{"name": "get_weather", "parameters": {"city": """, Tools).ToolCalls);

        var hermes = ChatToolFormat.Hermes.Parse(
            "I will check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>",
            Tools);
        Assert.Equal("I will check.", hermes.Content);
        Assert.Equal(["get_weather", "get_time"], hermes.ToolCalls.Select(c => c.Name));
        Assert.Equal("{}", hermes.ToolCalls[1].Arguments);

        // Unclosed at the end is still a call (generation stopped at the end of the turn); broken JSON is all content.
        Assert.Single(ChatToolFormat.Hermes.Parse("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n", Tools).ToolCalls);
        string broken = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": \n</tool_call>";
        Assert.Equal(broken, ChatToolFormat.Hermes.Parse(broken, Tools).Content);
        Assert.Equal("No tools needed.", ChatToolFormat.Hermes.Parse("No tools needed.", Tools).Content);
    }

    private static GbnfGrammar Grammar(ChatToolFormat format, ChatToolChoice choice, bool parallel = false, IReadOnlyList<ChatTool>? tools = null)
    {
        var (text, root) = format.Grammar(tools ?? Tools, choice, parallel) ?? throw new InvalidOperationException("no grammar");
        return GbnfGrammar.Parse(text, root);
    }

    [Fact]
    public void Generic_grammars_take_calls_with_valid_arguments_and_with_auto_a_response()
    {
        const string call = """{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}}""";
        const string response = """{"response": "Hello"}""";
        var auto = Grammar(ChatToolFormat.Generic, ChatToolChoice.Auto);
        Assert.True(auto.Matches(call));
        Assert.True(auto.Matches(response));
        Assert.True(auto.Matches("""{"tool_call": {"name": "get_time", "arguments": {}}}"""));
        Assert.False(auto.Matches("Hello"));
        Assert.False(auto.Matches("""{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 9}}}""")); // maximum 7
        Assert.False(auto.Matches("""{"tool_call": {"name": "get_weather", "arguments": {"days": 3}}}""")); // city required
        Assert.False(auto.Matches("""{"tool_call": {"name": "get_timer", "arguments": {}}}"""));

        var required = Grammar(ChatToolFormat.Generic, new ChatToolChoice(ChatToolMode.Required));
        Assert.True(required.Matches(call));
        Assert.False(required.Matches(response));

        var named = Grammar(ChatToolFormat.Generic, new ChatToolChoice(ChatToolMode.Required, "get_time"));
        Assert.False(named.Matches(call));
        Assert.True(named.Matches("""{"tool_call": {"name": "get_time", "arguments": {}}}"""));

        var parallel = Grammar(ChatToolFormat.Generic, new ChatToolChoice(ChatToolMode.Required), parallel: true);
        Assert.True(parallel.Matches("""{"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]}"""));
        Assert.False(parallel.Matches("""{"tool_calls": []}"""));

        Assert.Null(ChatToolFormat.Generic.Grammar(Tools, new ChatToolChoice(ChatToolMode.None)));
        Assert.Null(ChatToolFormat.Generic.Grammar([], ChatToolChoice.Auto));
        Assert.Throws<ArgumentException>(() => ChatToolFormat.Generic.Grammar(Tools, new ChatToolChoice(ChatToolMode.Required, "nope")));
    }

    [Fact]
    public void Llama3_and_hermes_grammars_write_the_models_syntax_and_leave_auto_free()
    {
        Assert.Null(ChatToolFormat.Llama3.Grammar(Tools, ChatToolChoice.Auto));
        Assert.Null(ChatToolFormat.Hermes.Grammar(Tools, ChatToolChoice.Auto));
        var required = new ChatToolChoice(ChatToolMode.Required);

        var llama = Grammar(ChatToolFormat.Llama3, required);
        Assert.True(llama.Matches("""{"name": "get_weather", "parameters": {"city": "Oslo"}}"""));
        Assert.False(llama.Matches("""{"name": "get_weather", "arguments": {"city": "Oslo"}}"""));

        var hermes = Grammar(ChatToolFormat.Hermes, required);
        const string block = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        Assert.True(hermes.Matches(block));
        Assert.False(hermes.Matches(block + "\n" + block));
        Assert.True(Grammar(ChatToolFormat.Hermes, required, parallel: true).Matches(block + "\n" + block));

        // What a grammar accepts parses back into the same call.
        var parsed = ChatToolFormat.Hermes.Parse(block, Tools);
        Assert.Equal("""{"city":"Oslo"}""", Assert.Single(parsed.ToolCalls).Arguments);
    }

    [Fact]
    public void A_tools_defs_are_shared_by_the_combined_grammar()
    {
        var tool = new ChatTool("book", null, """{"type": "object", "properties": {"when": {"$ref": "#/definitions/slot"}}, "required": ["when"], "definitions": {"slot": {"enum": ["am", "pm"]}}}""");
        var g = Grammar(ChatToolFormat.Generic, new ChatToolChoice(ChatToolMode.Required), tools: [tool, Time]);
        Assert.True(g.Matches("""{"tool_call": {"name": "book", "arguments": {"when": "pm"}}}"""));
        Assert.False(g.Matches("""{"tool_call": {"name": "book", "arguments": {"when": "noon"}}}"""));

        var clash = new ChatTool("other", null, """{"type": "object", "properties": {"x": {"$ref": "#/$defs/slot"}}, "$defs": {"slot": {"type": "integer"}}}""");
        Assert.Contains("slot", Assert.Throws<ArgumentException>(() => ChatToolFormat.Generic.Grammar([tool, clash], ChatToolChoice.Auto)).Message, StringComparison.Ordinal);
        var inward = new ChatTool("inward", null, """{"type": "object", "properties": {"a": {"type": "string"}, "b": {"$ref": "#/properties/a"}}}""");
        Assert.Throws<ArgumentException>(() => ChatToolFormat.Generic.Grammar([inward], ChatToolChoice.Auto));
        using var _ = JsonDocument.Parse(tool.Parameters); // the tool itself is left as it was
        Assert.Contains("definitions", tool.Parameters, StringComparison.Ordinal);
    }

    [Fact]
    public void Auto_triggers_wake_the_required_grammar_at_the_start_of_a_call()
    {
        Assert.Null(ChatToolFormat.Generic.AutoTriggers(null)); // generic auto has a grammar of its own

        var hermes = ChatToolFormat.Hermes.AutoTriggers(null)!;
        Assert.Equal(["<tool_call>"], hermes.Words);
        Assert.False(hermes.AtStart);

        var llama3 = ChatToolFormat.Llama3.AutoTriggers(null)!;
        Assert.True(llama3.AtStart);
        Assert.Empty(llama3.Tokens); // no tokenizer, or one without <|python_tag|>: words only

        // Each word is the start of a call the format's required grammar accepts, with one tool or several, in parallel or not.
        foreach (var (format, triggers) in new[] { (ChatToolFormat.Hermes, hermes), (ChatToolFormat.Llama3, llama3) })
        {
            foreach (bool parallel in new[] { false, true })
            {
                foreach (ChatTool[] tools in new[] { [Weather], Tools })
                {
                    var (text, root) = format.Grammar(tools, new ChatToolChoice(ChatToolMode.Required), parallel)!.Value;
                    var grammar = GbnfGrammar.Parse(text, root);
                    foreach (string word in triggers.Words)
                    {
                        Assert.True(new GrammarMatcher(grammar).TryAccept(word), $"{format} {word}");
                    }

                    Assert.False(new GrammarMatcher(grammar).TryAccept(triggers.Words[0] + "x"), $"{format}");
                }
            }
        }
    }

    [Theory]
    [InlineData("generic", """{"tool_call": {"name": "get_weather", "arguments": {"city": "Z\u00fcrich \"old\" town", "days": 3, "opts": [1.50, true, null, {"a": []}]}}}""", 1)]
    [InlineData("generic", """{ "tool_calls": [ {"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": { "city" : "Oslo" } } ] }""", 2)]
    [InlineData("llama3", """ {"name": "get_weather", "parameters": {"city": "Sm\u00f8la", "days": 12e-1}}""", 1)]
    [InlineData("hermes", "Let me see.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Köln\\n\", \"days\": 2}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", 2)]
    public void A_partial_reply_gives_prefixes_of_the_whole_replys_arguments(string format, string reply, int count)
    {
        var f = ChatToolFormat.Parse(format);
        var whole = f.Parse(reply, Tools);
        Assert.Equal(count, whole.ToolCalls.Count);
        var last = new string[count];
        for (int n = 0; n <= reply.Length; n++)
        {
            var partial = f.ParsePartial(reply[..n], Tools);
            Assert.InRange(partial.Calls.Count, 0, count);
            for (int i = 0; i < partial.Calls.Count; i++)
            {
                Assert.Equal(whole.ToolCalls[i].Name, partial.Calls[i].Name);
                Assert.StartsWith(partial.Calls[i].Arguments, whole.ToolCalls[i].Arguments, StringComparison.Ordinal);
                Assert.StartsWith(last[i] ?? string.Empty, partial.Calls[i].Arguments, StringComparison.Ordinal); // only grows
                last[i] = partial.Calls[i].Arguments;
            }

            if (partial.Calls.Count > 0)
            {
                Assert.Equal(whole.Content, partial.Content);
            }
        }

        // Whole: exactly the arguments Parse gives.
        Assert.Equal(whole.ToolCalls.Select(c => (c.Name, c.Arguments)), f.ParsePartial(reply, Tools).Calls);
    }

    [Theory]
    [InlineData("generic", """{"response": "{\"name\": \"get_weather\", \"arguments\": {}}"}""")]
    [InlineData("generic", """{"tool_call": {"arguments": {"city": "Oslo"}, "name": "get_weather"}}""")] // the name after the arguments: read whole only
    [InlineData("llama3", """Sure: {"name": "get_weather", "parameters": {}}""")]
    [InlineData("llama3", """{"name": "unknown_tool", "parameters": {"x": 1}}""")]
    [InlineData("hermes", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \"{}\"}\n</tool_call>")]
    public void A_partial_reply_that_is_no_streamable_call_gives_none(string format, string reply)
    {
        var f = ChatToolFormat.Parse(format);
        for (int n = 0; n <= reply.Length; n++)
        {
            Assert.Empty(f.ParsePartial(reply[..n], Tools).Calls);
        }
    }

    [Theory]
    [InlineData("llama3", "", false)]
    [InlineData("llama3", "  \n", false)]
    [InlineData("llama3", " {", false)]
    [InlineData("llama3", "<|pyth", false)] // the tag may be coming
    [InlineData("llama3", "<|python_tag|> ", false)]
    [InlineData("llama3", "<|python_tag|>{\"name\"", false)]
    [InlineData("llama3", "<|python_tag|>print", true)]
    [InlineData("llama3", " Sure", true)]
    [InlineData("llama3", "<b>", true)]
    [InlineData("generic", "\n{", false)]
    [InlineData("generic", "Hello", true)]
    [InlineData("hermes", "Hello", false)] // a call may follow any text
    public void A_reply_is_text_whatever_follows_once_it_cannot_start_a_call(string format, string start, bool text)
    {
        var f = ChatToolFormat.Parse(format);
        Assert.Equal(text, f.IsTextWhateverFollows(start));
        if (text)
        {
            // Whatever follows, Parse gives the whole reply as its content.
            foreach (string rest in new[] { string.Empty, " {\"name\": \"get_time\", \"parameters\": {}}", "{\"tool_call\": {\"name\": \"get_time\", \"arguments\": {}}}" })
            {
                var reply = f.Parse(start + rest, Tools);
                Assert.Empty(reply.ToolCalls);
                Assert.Equal(start + rest, reply.Content);
            }
        }
    }

    [Theory]
    [InlineData("hermes", " Lily went out.", " Lily went out.", " Lily went out.")]
    [InlineData("hermes", "Let me check. <tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\nDone.", "Let me check.", "Let me check. \nDone.")]
    [InlineData("hermes", "Two < three, and <tool_call> is a word here.", "Two < three, and", "Two < three, and <tool_call> is a word here.")] // not a call: all text
    [InlineData("generic", "{ \"response\" : \"Tab\\there, \\\"quoted\\\", \\u00e9t\\u00e9, \\ud83d\\ude00 ok\" }", "Tab\there, \"quoted\", \u00e9t\u00e9, \U0001F600 ok", "Tab\there, \"quoted\", \u00e9t\u00e9, \U0001F600 ok")]
    [InlineData("generic", "{\"response\": \"cut sh", "cut sh", "cut sh")] // cut short: the string as far as it goes
    [InlineData("generic", "{\"response\": \"a\\ud83d b\\udc00\"}", "a\uFFFD b\uFFFD", "a\uFFFD b\uFFFD")] // lone surrogate escapes: U+FFFD
    [InlineData("generic", "Plain words", "Plain words", "Plain words")]
    [InlineData("llama3", " Sure, here.", " Sure, here.", " Sure, here.")]
    public void Content_so_far_of_every_cut_is_a_prefix_of_the_whole_replys_content(string format, string reply, string streamed, string content)
    {
        var f = ChatToolFormat.Parse(format);
        var whole = f.Parse(reply, Tools);
        Assert.Equal(content, whole.Content);
        string last = string.Empty;
        for (int n = 0; n <= reply.Length; n++)
        {
            string? soFar = f.ContentSoFar(reply[..n]);
            if (soFar is null)
            {
                continue;
            }

            // A prefix of the content (trimmed at the start where calls follow), and it only grows.
            Assert.StartsWith(whole.ToolCalls.Count > 0 ? soFar.TrimStart() : soFar, content, StringComparison.Ordinal);
            Assert.StartsWith(last, soFar, StringComparison.Ordinal);
            last = soFar;
        }

        Assert.Equal(streamed, last);
    }

    [Theory]
    [InlineData("Hi <", "Hi")]
    [InlineData("Hi <tool", "Hi")]
    [InlineData("Hi <tool_call", "Hi")]
    [InlineData("Hi <tool_call>", "Hi")]
    [InlineData("Hi <b>", "Hi <b>")]
    [InlineData("Hi \n", "Hi")]
    [InlineData("  ", null)]
    public void Hermes_content_so_far_holds_back_what_may_start_a_call_and_whitespace_a_call_would_trim(string text, string? expected)
    {
        Assert.Equal(expected, ChatToolFormat.Hermes.ContentSoFar(text));
    }

    [Theory]
    [InlineData("{\"response\": \"a\\", "a")] // an escape not yet whole
    [InlineData("{\"response\": \"a\\u00", "a")]
    [InlineData("{\"response\": \"a\\ud83d", "a")] // a high surrogate waits for its low half
    [InlineData("{\"response\": \"a\\ud83d\\ude0", "a")]
    [InlineData("{\"response\": \"a\\ud83d\\", "a")]
    [InlineData("{\"response\": \"a\\ud83dx", "a\uFFFDx")] // no low half can follow
    [InlineData("{\"response\"", null)]
    [InlineData("{\"tool_call\": {\"name\": \"", null)]
    public void Generic_content_so_far_decodes_the_response_string_as_far_as_it_is_whole(string text, string? expected)
    {
        Assert.Equal(expected, ChatToolFormat.Generic.ContentSoFar(text));
    }

    [Fact]
    public void Any_text_reads_back_without_throwing_in_every_format()
    {
        // Replies are model output: Parse, ParsePartial and ContentSoFar must take any text (pieces of the formats' syntax,
        // broken JSON, escapes, lone surrogates) and give calls or content, never an exception.
        string[] pieces = ["<tool_call>", "</tool_call>", "<|python_tag|>", "{", "}", "[", "]", "\"", "\\", "\\u", "\\ud83d", "\\u00e9", ":", ",", " ", "\n",
            "\"name\"", "\"get_weather\"", "\"get_time\"", "\"arguments\"", "\"parameters\"", "\"response\"", "\"tool_call\"", "\"tool_calls\"",
            "\"city\"", "\"Oslo\"", "1", "-2.5e3", "true", "null", "\ud800", "x", "{\"name\": \"get_time\", \"arguments\": {}}"];
        Gen.Select(Gen.Int[0, ChatToolFormat.All.Count - 1], Gen.Int[0, pieces.Length - 1].Array[0, 30]).Sample((f, ix) =>
        {
            var format = ChatToolFormat.All[f];
            string text = string.Concat(ix.Select(i => pieces[i]));
            var whole = format.Parse(text, Tools);
            Assert.True(whole.ToolCalls.Count > 0 || whole.Content is not null);
            for (int n = 0; n <= text.Length; n++)
            {
                _ = format.ParsePartial(text[..n], Tools);
                _ = format.ContentSoFar(text[..n]);
            }
        }, iter: 2000, threads: 1);
    }
}
