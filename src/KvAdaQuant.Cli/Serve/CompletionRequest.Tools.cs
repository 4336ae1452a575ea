using System.Text.Json;
using System.Text.RegularExpressions;
using KvAdaQuant.Engine;
using KvAdaQuant.Grammar;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// Tool calling on <c>/v1/chat/completions</c>: OpenAI's <c>tools</c> (functions with a JSON Schema of their arguments),
/// <c>tool_choice</c> and <c>parallel_tool_calls</c>, checked here (a 400 naming the field and the place); the model's
/// <see cref="ChatToolFormat"/> renders them and gives the grammar a call must follow (<see cref="WithToolFormat"/>).
/// </summary>
internal sealed partial record CompletionRequest
{
    /// <summary>The functions offered (<c>tools</c>), or null when there are none.</summary>
    public IReadOnlyList<ChatTool>? Tools { get; init; }

    /// <summary><c>tool_choice</c>: <c>auto</c> (the default), <c>none</c>, <c>required</c> or a named function.</summary>
    public ChatToolChoice ToolChoice { get; init; } = ChatToolChoice.Auto;

    /// <summary><c>parallel_tool_calls</c>: whether a reply may call several tools (false by default, as llama-server).</summary>
    public bool ParallelToolCalls { get; init; }

    /// <summary>Whether the reply may call tools: some are offered and <see cref="ToolChoice"/> is not <c>none</c>.</summary>
    public bool ToolsActive => Tools is { Count: > 0 } && ToolChoice.Mode != ChatToolMode.None;

    /// <summary>The tools the prompt offers: <see cref="Tools"/> when <see cref="ToolsActive"/>, else none.</summary>
    public IReadOnlyList<ChatTool> OfferedTools => ToolsActive ? Tools! : [];

    /// <summary>
    /// The request with the constraint of <paramref name="format"/> for its tools: with <see cref="ToolsActive"/> the grammar
    /// of <see cref="ChatToolFormat.Grammar"/> replaces any of the server's (for <c>auto</c> where the format has
    /// <see cref="ChatToolFormat.AutoTriggers"/> over <paramref name="tokenizer"/>: the grammar of <c>required</c>, lazy);
    /// without, the request as it is.
    /// </summary>
    public CompletionRequest WithToolFormat(ChatToolFormat format, ITokenizer? tokenizer)
    {
        if (!ToolsActive)
        {
            return this;
        }

        (string Text, string Root)? grammar;
        GrammarTriggers? triggers = ToolChoice.Mode == ChatToolMode.Auto ? format.AutoTriggers(tokenizer) : null;
        try
        {
            grammar = format.Grammar(Tools!, triggers is null ? ToolChoice : new ChatToolChoice(ChatToolMode.Required), ParallelToolCalls);
        }
        catch (JsonSchemaException e)
        {
            throw Invalid("tools", $"tools: the calls' schema: {e.Message}");
        }
        catch (ArgumentException e)
        {
            throw Invalid("tools", e.Message);
        }

        if (grammar is not { } g)
        {
            return this with { Grammar = null, GrammarField = null, ParsedGrammar = null, GrammarTriggers = null };
        }

        try
        {
            return this with { Grammar = g.Text, GrammarField = "tools", ParsedGrammar = GbnfGrammar.Parse(g.Text, g.Root), GrammarTriggers = triggers };
        }
        catch (GrammarException e)
        {
            throw Invalid("tools", $"tools: the calls' grammar: {e.Message}");
        }
    }

    /// <summary>
    /// <c>tools</c>, <c>tool_choice</c> and <c>parallel_tool_calls</c> of a chat body, checked: each tool
    /// <c>{"type": "function", "function": {"name", "description"?, "parameters"?}}</c> with a name of letters, digits,
    /// <c>_</c> and <c>-</c> (at most 64, OpenAI's rule), not given twice, and parameters a JSON Schema object (kept as compact
    /// JSON; absent: no arguments, <c>{}</c>; whether the grammar converter takes it is checked by
    /// <see cref="ServedModel.WithTools"/>); <c>tool_choice</c> <c>required</c> or a named function only with tools, the name one of them.
    /// </summary>
    internal static (List<ChatTool>? Tools, ChatToolChoice Choice, bool Parallel) ParseTools(JsonElement body)
    {
        List<ChatTool>? tools = null;
        if (Field(body, "tools") is { } array)
        {
            if (array.ValueKind != JsonValueKind.Array)
            {
                throw Invalid("tools", $"tools must be an array of {{\"type\": \"function\", \"function\": {{...}}}} objects, got {Raw(array)}");
            }

            tools = [];
            int i = 0;
            foreach (var e in array.EnumerateArray())
            {
                var tool = ParseTool(e, $"tools[{i}]");
                if (tools.Any(t => t.Name == tool.Name))
                {
                    throw Invalid("tools", $"tools[{i}].function.name: '{tool.Name}' is given twice");
                }

                tools.Add(tool);
                i++;
            }
        }

        var choice = ChatToolChoice.Auto;
        if (Field(body, "tool_choice") is { } c)
        {
            choice = c.ValueKind switch
            {
                JsonValueKind.String => c.GetString() switch
                {
                    "auto" => ChatToolChoice.Auto,
                    "none" => new ChatToolChoice(ChatToolMode.None),
                    "required" => new ChatToolChoice(ChatToolMode.Required),
                    _ => throw Invalid("tool_choice", $"tool_choice must be \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {Raw(c)}"),
                },
                JsonValueKind.Object => new ChatToolChoice(ChatToolMode.Required, NamedChoice(c)),
                _ => throw Invalid("tool_choice", $"tool_choice must be a string or an object, got {Raw(c)}"),
            };
            if (choice.Mode == ChatToolMode.Required && tools is not { Count: > 0 })
            {
                throw Invalid("tool_choice", $"tool_choice {Raw(c)} needs tools to call; the request offers none");
            }

            if (choice.Function is { } name && !tools!.Any(t => t.Name == name))
            {
                throw Invalid("tool_choice", $"tool_choice.function.name: '{name}' is not among the tools ({string.Join(", ", tools!.Select(t => t.Name))})");
            }
        }

        return (tools, choice, Flag(body, "parallel_tool_calls", absent: false));
    }

    private static readonly Regex ToolName = new("^[a-zA-Z0-9_-]{1,64}$", RegexOptions.CultureInvariant);

    private static ChatTool ParseTool(JsonElement e, string at)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            throw Invalid("tools", $"{at} must be an object {{\"type\": \"function\", \"function\": {{...}}}}, got {Raw(e)}");
        }

        if (Field(e, "type") is not { } type)
        {
            throw Invalid("tools", $"{at}.type is missing (\"function\")");
        }

        if (type.ValueKind != JsonValueKind.String || type.GetString() != "function")
        {
            throw Invalid("tools", $"{at}.type must be \"function\" (the only kind of tool kvaq serve calls), got {Raw(type)}");
        }

        if (Field(e, "function") is not { } function)
        {
            throw Invalid("tools", $"{at}.function is missing");
        }

        if (function.ValueKind != JsonValueKind.Object)
        {
            throw Invalid("tools", $"{at}.function must be an object with name, description and parameters, got {Raw(function)}");
        }

        if (Field(function, "name") is not { } name)
        {
            throw Invalid("tools", $"{at}.function.name is missing");
        }

        if (name.ValueKind != JsonValueKind.String || !ToolName.IsMatch(name.GetString()!))
        {
            throw Invalid("tools", $"{at}.function.name must be 1 to 64 letters, digits, _ or -, got {Raw(name)}");
        }

        string? description = null;
        if (Field(function, "description") is { } d)
        {
            description = d.ValueKind == JsonValueKind.String ? d.GetString() : throw Invalid("tools", $"{at}.function.description must be a string, got {Raw(d)}");
        }

        string parameters = """{"type": "object", "properties": {}, "additionalProperties": false}""";
        if (Field(function, "parameters") is { } p)
        {
            if (p.ValueKind != JsonValueKind.Object)
            {
                throw Invalid("tools", $"{at}.function.parameters must be a JSON Schema object, got {Raw(p)}");
            }

            parameters = Compact(p);
        }

        return new ChatTool(name.GetString()!, description, parameters);
    }

    /// <summary>
    /// Throws a 400 naming <c>tools[i].function.parameters</c> and the place in it where the grammar converter cannot follow
    /// a tool's schema (<see cref="ServedModel.WithTools"/> checks them once per tool list).
    /// </summary>
    internal static void CheckToolSchemas(IReadOnlyList<ChatTool> tools)
    {
        for (int i = 0; i < tools.Count; i++)
        {
            using var doc = JsonDocument.Parse(tools[i].Parameters);
            _ = FromSchema(doc.RootElement, "tools", $"tools[{i}].function.parameters");
        }
    }

    // JSON as compact text (one spelling of a schema, whatever the client's spacing: the tool grammar cache's key).
    private static string Compact(JsonElement e)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            e.WriteTo(writer);
        }

        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static string NamedChoice(JsonElement c)
    {
        if (Field(c, "type") is not { ValueKind: JsonValueKind.String } type || type.GetString() != "function")
        {
            throw Invalid("tool_choice", $"tool_choice.type must be \"function\", got {(Field(c, "type") is { } t ? Raw(t) : "nothing")}");
        }

        if (Field(c, "function") is not { ValueKind: JsonValueKind.Object } function)
        {
            throw Invalid("tool_choice", "tool_choice.function is missing (an object with the name of the function to call)");
        }

        return Field(function, "name") is { ValueKind: JsonValueKind.String } name
            ? name.GetString()!
            : throw Invalid("tool_choice", "tool_choice.function.name is missing");
    }

    // An assistant message's tool_calls (each {"id", "type": "function", "function": {"name", "arguments"}}; arguments JSON text or an object).
    private static List<ChatToolCall> ParseToolCalls(JsonElement calls, string at)
    {
        if (calls.ValueKind != JsonValueKind.Array)
        {
            throw Invalid("messages", $"{at}.tool_calls must be an array of calls, got {Raw(calls)}");
        }

        var list = new List<ChatToolCall>();
        foreach (var e in calls.EnumerateArray())
        {
            string here = $"{at}.tool_calls[{list.Count}]";
            if (e.ValueKind != JsonValueKind.Object)
            {
                throw Invalid("messages", $"{here} must be an object, got {Raw(e)}");
            }

            if (Field(e, "type") is { } type && (type.ValueKind != JsonValueKind.String || type.GetString() != "function"))
            {
                throw Invalid("messages", $"{here}.type must be \"function\", got {Raw(type)}");
            }

            string id = Field(e, "id") switch
            {
                null => ChatToolFormat.NewCallId(),
                { ValueKind: JsonValueKind.String } s => s.GetString()!,
                { } other => throw Invalid("messages", $"{here}.id must be a string, got {Raw(other)}"),
            };
            if (Field(e, "function") is not { ValueKind: JsonValueKind.Object } function)
            {
                throw Invalid("messages", $"{here}.function is missing (an object with name and arguments)");
            }

            if (Field(function, "name") is not { ValueKind: JsonValueKind.String } name)
            {
                throw Invalid("messages", $"{here}.function.name is missing");
            }

            string arguments = Field(function, "arguments") switch
            {
                null => "{}",
                { ValueKind: JsonValueKind.Object } o => o.GetRawText(),
                { ValueKind: JsonValueKind.String } s when IsJsonObject(s.GetString()!) => s.GetString()!,
                { } other => throw Invalid("messages", $"{here}.function.arguments must be a JSON object as a string, got {Raw(other)}"),
            };
            list.Add(new ChatToolCall(id, name.GetString()!, arguments));
        }

        return list;
    }

    private static bool IsJsonObject(string text)
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
