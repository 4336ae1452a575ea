using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Engine;

/// <summary>
/// How tools are offered to a model and how its calls are read back, in the three families llama-server (<c>--jinja</c>)
/// also tells apart: <see cref="Llama3"/> (Meta's Llama 3.1 / 3.2 custom tools: the definitions in the first user message,
/// a call is the reply <c>{"name": ..., "parameters": {...}}</c>, results come back in <c>ipython</c> turns),
/// <see cref="Hermes"/> (Hermes 2 Pro, Qwen 2.5 and other ChatML tool models: the definitions in <c>&lt;tools&gt;</c> in the
/// system message, calls in <c>&lt;tool_call&gt;{"name": ..., "arguments": {...}}&lt;/tool_call&gt;</c>, results in
/// <c>&lt;tool_response&gt;</c> user turns) and <see cref="Generic"/> for every other model (llama-server's "generic"
/// format: the model is told to answer with one JSON object, <c>{"tool_call": {"name": ..., "arguments": {...}}}</c>,
/// <c>{"tool_calls": [...]}</c> with parallel calls, or <c>{"response": "..."}</c>).
/// </summary>
/// <remarks>
/// <see cref="Prepare"/> turns a conversation with tools, tool calls and <c>tool</c> messages into plain messages the
/// <see cref="ChatTemplate"/> renders; <see cref="Grammar"/> gives the GBNF grammar that makes the reply a valid call (or,
/// with the generic format and <c>auto</c>, a valid call or a text reply), and <see cref="AutoTriggers"/> what wakes that
/// grammar, applied lazily, for <c>auto</c> in the other formats; <see cref="Parse"/> reads a reply back into its text and
/// calls, keeping the whole text as the content when it is not a well-formed call, and <see cref="ParsePartial"/> the calls
/// of a reply still being written, for streaming.
/// </remarks>
public sealed partial class ChatToolFormat
{
    private const string HermesRoot = "hermes-tool-calls";

    private static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static readonly JsonSerializerOptions Indented = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, WriteIndented = true, IndentSize = 4 };

    private ChatToolFormat(string name) => Name = name;

    /// <summary>llama-server's generic format: one JSON object with <c>tool_call</c>, <c>tool_calls</c> or <c>response</c>.</summary>
    public static ChatToolFormat Generic { get; } = new("generic");

    /// <summary>Meta's Llama 3.1 / 3.2 JSON tool calls (custom tools), results in <c>ipython</c> turns.</summary>
    public static ChatToolFormat Llama3 { get; } = new("llama3");

    /// <summary>Hermes 2 Pro / Qwen 2.5 style: <c>&lt;tool_call&gt;</c> blocks, results in <c>&lt;tool_response&gt;</c>.</summary>
    public static ChatToolFormat Hermes { get; } = new("hermes");

    /// <summary>Every format, by name.</summary>
    public static IReadOnlyList<ChatToolFormat> All { get; } = [Generic, Llama3, Hermes];

    /// <summary>The format's name (<c>generic</c>, <c>llama3</c>, <c>hermes</c>).</summary>
    public string Name { get; }

    /// <summary>The format named <paramref name="name"/> (case-insensitive); an error lists the names.</summary>
    public static ChatToolFormat Parse(string name) =>
        All.FirstOrDefault(f => string.Equals(f.Name, name.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown tool format '{name}'; expected one of {string.Join(", ", All.Select(f => f.Name))}");

    /// <summary>
    /// The format of a model with Jinja template <paramref name="jinja"/> rendered as <paramref name="template"/>, as
    /// llama-server picks it: a ChatML template that writes <c>&lt;tool_call&gt;</c> is <see cref="Hermes"/>, a Llama 3
    /// template that knows the <c>ipython</c> role or <c>&lt;|python_tag|&gt;</c> (3.1, 3.2; not 3.0) is
    /// <see cref="Llama3"/>, anything else (no template included) <see cref="Generic"/>.
    /// </summary>
    public static ChatToolFormat Detect(string? jinja, ChatTemplate template)
    {
        if (string.IsNullOrEmpty(jinja))
        {
            return Generic;
        }

        if (template == ChatTemplate.ChatMl && jinja.Contains("<tool_call>", StringComparison.Ordinal))
        {
            return Hermes;
        }

        return template == ChatTemplate.Llama3 && (jinja.Contains("<|python_tag|>", StringComparison.Ordinal) || jinja.Contains("ipython", StringComparison.Ordinal))
            ? Llama3
            : Generic;
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>
    /// <paramref name="messages"/> with the <paramref name="tools"/> offered (none: only the calls and results of the
    /// conversation are rewritten) rendered by <paramref name="template"/>; see <see cref="Prepare"/>. A template other
    /// than Llama 3's has no <c>ipython</c> role: there Llama 3 tool results are user turns.
    /// </summary>
    public string Render(ChatTemplate template, IReadOnlyList<ChatMessage> messages, IReadOnlyList<ChatTool> tools, bool parallel = false, bool addGenerationPrompt = true)
    {
        var prepared = Prepare(messages, tools, parallel);
        if (template != ChatTemplate.Llama3)
        {
            prepared = [.. prepared.Select(m => m.Role == "ipython" ? m with { Role = "user" } : m)];
        }

        return template.Render(prepared, addGenerationPrompt);
    }

    /// <summary>
    /// The conversation as plain <c>system</c>/<c>user</c>/<c>assistant</c> messages (<c>ipython</c> for Llama 3 tool
    /// results): the tool definitions where the format puts them, each assistant message's calls written as the model writes
    /// them, each <c>tool</c> message as the format returns results. Messages without tools are kept as they are.
    /// </summary>
    public IReadOnlyList<ChatMessage> Prepare(IReadOnlyList<ChatMessage> messages, IReadOnlyList<ChatTool> tools, bool parallel = false)
    {
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var call in messages.SelectMany(m => m.ToolCalls ?? []))
        {
            names.TryAdd(call.Id, call.Name);
        }

        var result = new List<ChatMessage>();
        foreach (var m in messages)
        {
            if (m.Role == "tool")
            {
                string? name = m.Name ?? (m.ToolCallId is { } id ? names.GetValueOrDefault(id) : null);
                result.Add(ToolResult(m, name, result));
            }
            else if (m.ToolCalls is { Count: > 0 } calls)
            {
                result.Add(new ChatMessage(m.Role, WriteCalls(m.Content, calls, parallel)));
            }
            else
            {
                result.Add(new ChatMessage(m.Role, m.Content));
            }
        }

        if (tools.Count > 0)
        {
            Offer(result, tools, parallel);
        }

        return result;
    }

    // A tool message as the format returns results (Hermes: consecutive results share one user turn).
    private ChatMessage ToolResult(ChatMessage m, string? name, List<ChatMessage> before)
    {
        switch (Name)
        {
            case "llama3":
                return new ChatMessage("ipython", m.Content);
            case "hermes":
                string block = $"<tool_response>\n{m.Content}\n</tool_response>";
                if (before.Count > 0 && before[^1] is { Role: "user" } last && last.Content.StartsWith("<tool_response>", StringComparison.Ordinal))
                {
                    before.RemoveAt(before.Count - 1);
                    return new ChatMessage("user", last.Content + "\n" + block);
                }

                return new ChatMessage("user", block);
            default:
                var response = new JsonObject();
                if (name is not null)
                {
                    response["tool"] = name;
                }

                if (m.ToolCallId is not null)
                {
                    response["tool_call_id"] = m.ToolCallId;
                }

                response["content"] = m.Content;
                return new ChatMessage("user", new JsonObject { ["tool_response"] = response }.ToJsonString(Compact));
        }
    }

    // An assistant message's calls as the model writes them.
    private string WriteCalls(string content, IReadOnlyList<ChatToolCall> calls, bool parallel)
    {
        string text = Name switch
        {
            "llama3" => string.Join("\n", calls.Select(c => new JsonObject { ["name"] = c.Name, ["parameters"] = Arguments(c) }.ToJsonString(Compact))),
            "hermes" => string.Join("\n", calls.Select(c => $"<tool_call>\n{new JsonObject { ["name"] = c.Name, ["arguments"] = Arguments(c) }.ToJsonString(Compact)}\n</tool_call>")),
            _ => calls.Count == 1 && !parallel
                ? new JsonObject { ["tool_call"] = GenericCall(calls[0]) }.ToJsonString(Compact)
                : new JsonObject { ["tool_calls"] = new JsonArray([.. calls.Select(GenericCall)]) }.ToJsonString(Compact),
        };
        return string.IsNullOrEmpty(content) ? text : content + "\n" + text;

        static JsonNode GenericCall(ChatToolCall c) => new JsonObject { ["name"] = c.Name, ["arguments"] = Arguments(c) };
    }

    // A call's arguments as JSON (text that is not JSON stays a string).
    private static JsonNode? Arguments(ChatToolCall call)
    {
        try
        {
            return JsonNode.Parse(call.Arguments);
        }
        catch (JsonException)
        {
            return JsonValue.Create(call.Arguments);
        }
    }

    // The tool definitions, where the format puts them.
    private void Offer(List<ChatMessage> messages, IReadOnlyList<ChatTool> tools, bool parallel)
    {
        switch (Name)
        {
            case "llama3":
                {
                    var text = new StringBuilder()
                        .Append("Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n")
                        .Append("Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}. Do not use variables.\n\n");
                    foreach (var t in tools)
                    {
                        text.Append(Definition(t).ToJsonString(Indented)).Append("\n\n");
                    }

                    // Meta's template puts them before the first user message's text (a system message when there is none).
                    int first = messages.FindIndex(m => m.Role == "user");
                    if (first >= 0)
                    {
                        messages[first] = messages[first] with { Content = text + messages[first].Content };
                    }
                    else
                    {
                        AddSystem(messages, text.ToString().TrimEnd());
                    }

                    break;
                }

            case "hermes":
                {
                    var text = new StringBuilder()
                        .Append("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n")
                        .Append("You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
                    foreach (var t in tools)
                    {
                        text.Append('\n').Append(Definition(t).ToJsonString(Compact));
                    }

                    text.Append("\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n")
                        .Append("<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
                    AddSystem(messages, text.ToString());
                    break;
                }

            default:
                {
                    var text = new StringBuilder("You can call these tools:");
                    foreach (var t in tools)
                    {
                        var entry = new JsonObject { ["name"] = t.Name };
                        if (t.Description is not null)
                        {
                            entry["description"] = t.Description;
                        }

                        entry["parameters"] = JsonNode.Parse(t.Parameters);
                        text.Append('\n').Append(entry.ToJsonString(Compact));
                    }

                    text.Append("\nRespond in JSON format, either with ")
                        .Append(parallel
                            ? "{\"tool_calls\": [{\"name\": <tool name>, \"arguments\": {...}}, ...]} to call tools"
                            : "{\"tool_call\": {\"name\": <tool name>, \"arguments\": {...}}} to call a tool")
                        .Append(", or with {\"response\": \"...\"} to reply to the user.");
                    AddSystem(messages, text.ToString());
                    break;
                }
        }
    }

    // OpenAI's tool object, as the tool templates print it.
    private static JsonObject Definition(ChatTool t)
    {
        var function = new JsonObject { ["name"] = t.Name };
        if (t.Description is not null)
        {
            function["description"] = t.Description;
        }

        function["parameters"] = JsonNode.Parse(t.Parameters);
        return new JsonObject { ["type"] = "function", ["function"] = function };
    }

    // Text appended to the leading system message, or a system message of its own first.
    private static void AddSystem(List<ChatMessage> messages, string text)
    {
        if (messages.Count > 0 && messages[0].Role == "system")
        {
            messages[0] = messages[0] with { Content = messages[0].Content.Length == 0 ? text : messages[0].Content + "\n\n" + text };
        }
        else
        {
            messages.Insert(0, new ChatMessage("system", text));
        }
    }

    /// <summary>
    /// The GBNF grammar (its text and root rule) a reply must follow for <paramref name="choice"/>, or null for free text:
    /// <c>required</c> (or a named function, then only that one) gives a grammar of calls of the tools whose arguments are
    /// valid under their schemas (<see cref="JsonSchemaGrammar"/>; in the format's syntax, several with
    /// <paramref name="parallel"/> where the format has them); <c>auto</c> with the generic format gives "a call or
    /// <c>{"response": "..."}</c>", and free text with the others (their replies are read by <see cref="Parse"/>; a server
    /// applies the <c>required</c> grammar lazily there, from one of <see cref="AutoTriggers"/> on);
    /// <c>none</c> or no tools, free text.
    /// </summary>
    /// <exception cref="ArgumentException">A named function is not among the tools, or the schemas cannot be combined.</exception>
    /// <exception cref="JsonSchemaException">A schema uses something the grammar converter does not support.</exception>
    public (string Text, string Root)? Grammar(IReadOnlyList<ChatTool> tools, ChatToolChoice choice, bool parallel = false)
    {
        if (tools.Count == 0 || choice.Mode == ChatToolMode.None || (choice.Mode == ChatToolMode.Auto && this != Generic))
        {
            return null;
        }

        var offered = choice.Function is { } f ? [.. tools.Where(t => t.Name == f)] : tools;
        if (offered.Count == 0)
        {
            throw new ArgumentException($"tool_choice names the function '{choice.Function}', which is not among the tools");
        }

        var defs = new JsonObject();
        string arguments = this == Llama3 ? "parameters" : "arguments";
        var calls = offered.Select(t => (JsonNode)new JsonObject
        {
            ["type"] = "object",
            ["properties"] = new JsonObject
            {
                ["name"] = new JsonObject { ["const"] = t.Name },
                [arguments] = Hoist(t, defs),
            },
            ["required"] = new JsonArray("name", arguments),
        }).ToList();
        JsonNode one = calls.Count == 1 ? calls[0] : new JsonObject { ["anyOf"] = new JsonArray([.. calls]) };
        JsonObject schema;
        if (this == Generic)
        {
            var call = parallel
                ? Object("tool_calls", new JsonObject { ["type"] = "array", ["items"] = one, ["minItems"] = 1 })
                : Object("tool_call", one);
            schema = choice.Mode == ChatToolMode.Auto
                ? new JsonObject { ["anyOf"] = new JsonArray(call, Object("response", new JsonObject { ["type"] = "string" })) }
                : call;
        }
        else
        {
            schema = one as JsonObject ?? throw new InvalidOperationException("a call schema is an object");
        }

        if (defs.Count > 0)
        {
            schema["$defs"] = defs;
        }

        string text = JsonSchemaGrammar.FromSchema(schema.ToJsonString());
        if (this != Hermes)
        {
            return (text, "root");
        }

        const string block = "\"<tool_call>\\n\" root \"\\n</tool_call>\"";
        return (text + $"{HermesRoot} ::= {block}{(parallel ? $" ( \"\\n\" {block} )*" : string.Empty)}\n", HermesRoot);

        static JsonObject Object(string key, JsonNode value) => new()
        {
            ["type"] = "object",
            ["properties"] = new JsonObject { [key] = value },
            ["required"] = new JsonArray(key),
        };
    }

    /// <summary>
    /// What wakes the lazy grammar that constrains <c>tool_choice</c> <c>auto</c> (the grammar of <c>required</c>, from
    /// <see cref="Grammar"/>, applied from the trigger on; the text before it is free), or null where <c>auto</c> has a
    /// grammar of its own (<see cref="Generic"/>: "a call or a response"). <see cref="Hermes"/>: the word
    /// <c>&lt;tool_call&gt;</c> anywhere (text before it is the reply's content). <see cref="Llama3"/>: the words
    /// <c>{"name"</c> and <c>{ "name"</c>, and the control token <c>&lt;|python_tag|&gt;</c> where
    /// <paramref name="tokenizer"/> has it, only at the start of the reply (after whitespace), since only a reply that is a
    /// call is read as one.
    /// </summary>
    public GrammarTriggers? AutoTriggers(Tokenization.ITokenizer? tokenizer)
    {
        if (this == Hermes)
        {
            return new GrammarTriggers(["<tool_call>"], []);
        }

        if (this != Llama3)
        {
            return null;
        }

        List<int> tokens = [];
        if (tokenizer?.Encode("<|python_tag|>", false, parseSpecial: true) is [int tag] && tokenizer.DecodeBytes(-1, tag).Length == 0)
        {
            tokens.Add(tag);
        }

        return new GrammarTriggers(["{\"name\"", "{ \"name\""], tokens, AtStart: true);
    }

    // A tool's parameters schema, its $defs (or definitions) moved into the combined schema's $defs and its $refs to them
    // rewritten; other $refs (into the parameters themselves) cannot be followed from the combined schema.
    private static JsonNode Hoist(ChatTool tool, JsonObject defs)
    {
        var parameters = JsonNode.Parse(tool.Parameters) ?? new JsonObject();
        if (parameters is JsonObject obj)
        {
            foreach (string key in (string[])["$defs", "definitions"])
            {
                if (obj[key] is JsonObject local)
                {
                    obj.Remove(key);
                    foreach (var (name, value) in local.ToList())
                    {
                        local.Remove(name);
                        Rewrite(value, tool.Name);
                        if (defs[name] is { } other && !JsonNode.DeepEquals(other, value))
                        {
                            throw new ArgumentException($"tools: {tool.Name}'s {key}/{name} differs from another tool's definition of the same name; rename one");
                        }

                        defs[name] = value;
                    }
                }
            }
        }

        Rewrite(parameters, tool.Name);
        return parameters;
    }

    private static void Rewrite(JsonNode? node, string tool)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (key, value) in o.ToList())
                {
                    if (key == "$ref" && value is JsonValue v && v.TryGetValue(out string? target))
                    {
                        o[key] = target.StartsWith("#/$defs/", StringComparison.Ordinal) ? target
                            : target.StartsWith("#/definitions/", StringComparison.Ordinal) ? "#/$defs/" + target["#/definitions/".Length..]
                            : throw new ArgumentException($"tools: {tool}'s parameters refer to {target}; a tool's $ref may point only into its $defs or definitions");
                    }
                    else
                    {
                        Rewrite(value, tool);
                    }
                }

                break;
            case JsonArray a:
                foreach (var item in a)
                {
                    Rewrite(item, tool);
                }

                break;
        }
    }

    /// <summary>
    /// A reply read back: the tool calls it makes (each with a new <c>call_...</c> id, its arguments as compact JSON) and its
    /// text. Generic: <c>{"tool_call": ...}</c> or <c>{"tool_calls": [...]}</c> are calls, <c>{"response": "..."}</c> is the
    /// text; Llama 3: a reply that is <c>{"name": ..., "parameters": {...}}</c> (after an optional
    /// <c>&lt;|python_tag|&gt;</c>) is a call; Hermes: each <c>&lt;tool_call&gt;...&lt;/tool_call&gt;</c> block is a call and
    /// the text around them the content. A call must name one of <paramref name="tools"/> (any name when it is empty) and
    /// give its arguments as an object; a reply that is not well formed is all content (<paramref name="text"/> as it is),
    /// except a generic <c>{"response": "...</c> cut short inside its string, whose content is that string as far as it goes.
    /// </summary>
    public ChatToolReply Parse(string text, IReadOnlyList<ChatTool> tools)
    {
        var plain = new ChatToolReply(text, []);
        var known = tools.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        try
        {
            switch (Name)
            {
                case "llama3":
                    {
                        string body = text.Trim();
                        body = body.StartsWith("<|python_tag|>", StringComparison.Ordinal) ? body["<|python_tag|>".Length..].TrimStart() : body;
                        if (!body.StartsWith('{'))
                        {
                            return plain;
                        }

                        using var doc = JsonDocument.Parse(body);
                        return Call(doc.RootElement, known, "parameters", "arguments") is { } call ? new ChatToolReply(null, [call]) : plain;
                    }

                case "hermes":
                    {
                        var calls = new List<ChatToolCall>();
                        var content = new StringBuilder();
                        int at = 0;
                        while (text.IndexOf("<tool_call>", at, StringComparison.Ordinal) is var open and >= 0)
                        {
                            content.Append(text, at, open - at);
                            int start = open + "<tool_call>".Length;
                            int close = text.IndexOf("</tool_call>", start, StringComparison.Ordinal);
                            using var doc = JsonDocument.Parse(text[start..(close < 0 ? text.Length : close)].Trim());
                            if (Call(doc.RootElement, known, "arguments", "parameters") is not { } call)
                            {
                                return plain;
                            }

                            calls.Add(call);
                            at = close < 0 ? text.Length : close + "</tool_call>".Length;
                        }

                        content.Append(text, at, text.Length - at);
                        string rest = content.ToString().Trim();
                        return calls.Count == 0 ? plain : new ChatToolReply(rest.Length == 0 ? null : rest, calls);
                    }

                default:
                    {
                        string body = text.Trim();
                        if (!body.StartsWith('{'))
                        {
                            return plain;
                        }

                        using var doc = JsonDocument.Parse(body);
                        var root = doc.RootElement;
                        if (root.TryGetProperty("tool_call", out var one))
                        {
                            return Call(one, known, "arguments", "parameters") is { } call ? new ChatToolReply(null, [call]) : plain;
                        }

                        if (root.TryGetProperty("tool_calls", out var many) && many.ValueKind == JsonValueKind.Array && many.GetArrayLength() > 0)
                        {
                            var calls = many.EnumerateArray().Select(e => Call(e, known, "arguments", "parameters")).ToList();
                            return calls.Any(c => c is null) ? plain : new ChatToolReply(null, [.. calls!]);
                        }

                        if (root.TryGetProperty("response", out var response))
                        {
                            // A string escaping a lone surrogate has no .NET text: decoded with U+FFFD in its place.
                            return new ChatToolReply(response.ValueKind != JsonValueKind.String ? response.GetRawText()
                                : Formats.JsonText.LoneSurrogate(response) is null ? response.GetString()
                                : GenericResponseSoFar(text, out _) ?? response.GetRawText(), []);
                        }

                        return plain;
                    }
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            // Not JSON, a lone surrogate escape (no text: GetString throws InvalidOperationException) or a string that is
            // no UTF-16 (ArgumentException): not well formed. A generic response cut short (max_tokens, a stop word)
            // inside its string: that string as far as it goes.
            return this == Generic && GenericResponseSoFar(text, out bool closed) is { } cut && !closed ? new ChatToolReply(cut, []) : plain;
        }
    }

    // {"name": ..., "<arguments>": {...}} as a call, or null when it is not one.
    private static ChatToolCall? Call(JsonElement e, HashSet<string> known, string arguments, string alternative)
    {
        if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String
            || (known.Count > 0 && !known.Contains(name.GetString()!)))
        {
            return null;
        }

        if (!e.TryGetProperty(arguments, out var args) && !e.TryGetProperty(alternative, out args))
        {
            return null;
        }

        if (args.ValueKind == JsonValueKind.String)
        {
            // Some models write the arguments as a JSON string, as OpenAI returns them.
            using var inner = JsonDocument.Parse(args.GetString()!);
            args = inner.RootElement.Clone();
        }

        return args.ValueKind == JsonValueKind.Object ? new ChatToolCall(NewCallId(), name.GetString()!, JsonSerializer.Serialize(args, Compact)) : null;
    }

    /// <summary>A new call id: <c>call_</c> and 24 random letters and digits, as OpenAI's.</summary>
    public static string NewCallId() =>
        "call_" + new string(RandomNumberGenerator.GetItems<char>("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 24));
}
