namespace KvAdaQuant.Cli.Serve;

/// <summary>A request the server refuses: the HTTP status, OpenAI's error type, and the field at fault (or null).</summary>
internal sealed class ServeRequestException(int status, string message, string? param = null, string type = "invalid_request_error") : Exception(message)
{
    public int Status { get; } = status;

    public string? Param { get; } = param;

    public string Type { get; } = type;
}
