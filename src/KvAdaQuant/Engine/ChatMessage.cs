namespace KvAdaQuant.Engine;

/// <summary>
/// One message of a conversation: <see cref="Role"/> is <c>system</c>, <c>user</c> or <c>assistant</c>, or <c>tool</c> (a
/// tool's result, answering <see cref="ToolCallId"/>). <see cref="ChatTemplate"/> renders the first three;
/// <see cref="ChatToolFormat"/> turns tool calls and results into messages it renders.
/// </summary>
public sealed record ChatMessage(string Role, string Content)
{
    /// <summary>The tools an assistant message called (OpenAI's <c>tool_calls</c>), or null.</summary>
    public IReadOnlyList<ChatToolCall>? ToolCalls { get; init; }

    /// <summary>For a <c>tool</c> message: the id of the call it answers (OpenAI's <c>tool_call_id</c>), or null.</summary>
    public string? ToolCallId { get; init; }

    /// <summary>For a <c>tool</c> message: the tool's name where the client gives it (or it is found from the call), or null.</summary>
    public string? Name { get; init; }
}
