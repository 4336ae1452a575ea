namespace KvAdaQuant.Engine;

/// <summary>A function the model may call (OpenAI's <c>{"type": "function", "function": {...}}</c>).</summary>
/// <param name="Name">The function's name.</param>
/// <param name="Description">What it does, or null.</param>
/// <param name="Parameters">Its arguments as a JSON Schema (JSON text) of an object.</param>
public sealed record ChatTool(string Name, string? Description, string Parameters);

/// <summary>A call of a tool: OpenAI's <c>tool_calls[i]</c>.</summary>
/// <param name="Id">The call's id (<c>call_...</c>).</param>
/// <param name="Name">The function called.</param>
/// <param name="Arguments">Its arguments as JSON text (an object).</param>
public sealed record ChatToolCall(string Id, string Name, string Arguments);

/// <summary>How the model may use the tools: OpenAI's <c>tool_choice</c>.</summary>
public enum ChatToolMode
{
    /// <summary>Call tools or answer in text, as the model chooses.</summary>
    Auto,

    /// <summary>Answer in text; the tools are not offered.</summary>
    None,

    /// <summary>Call at least one tool (<see cref="ChatToolChoice.Function"/>: that one).</summary>
    Required,
}

/// <summary>OpenAI's <c>tool_choice</c>: a mode, and for <c>{"type": "function", "function": {"name": ...}}</c> the function.</summary>
public sealed record ChatToolChoice(ChatToolMode Mode, string? Function = null)
{
    /// <summary><c>"auto"</c>, the default.</summary>
    public static ChatToolChoice Auto { get; } = new(ChatToolMode.Auto);
}

/// <summary>A reply read back by <see cref="ChatToolFormat.Parse"/>: its text (null when there is none) and the calls it makes.</summary>
public sealed record ChatToolReply(string? Content, IReadOnlyList<ChatToolCall> ToolCalls);
