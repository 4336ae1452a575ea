using System.Text.Json.Serialization;

namespace KvAdaQuant.Cli.Serve;

// The response bodies of kvaq serve, in OpenAI's shape (snake_case), serialized by the source generator below.

/// <summary><c>GET /health</c>.</summary>
internal sealed record HealthResponse(string Status);

/// <summary>One entry of <c>GET /v1/models</c>.</summary>
internal sealed record ModelEntry(string Id, string Object, long Created, string OwnedBy, ModelMeta Meta);

/// <summary>What kvaq adds to a model entry.</summary>
internal sealed record ModelMeta(string Path, int Ctx, int VocabSize, string Kv, string ChatTemplate, string Device);

/// <summary><c>GET /v1/models</c>.</summary>
internal sealed record ModelList(string Object, IReadOnlyList<ModelEntry> Data);

/// <summary>Token counts of a request.</summary>
internal sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>The <c>kvaq</c> extension object: the cache, where it runs (<c>cpu</c> or <c>cuda</c>) and the speed of the run.</summary>
internal sealed record KvaqStats(string Kv, long KvBytes, int Ctx, string StopReason, int CachedTokens, double PrefillTokensPerSecond, double DecodeTokensPerSecond, string Device);

/// <summary>A choice of <c>/v1/completions</c> (whole or streamed).</summary>
internal sealed record TextChoice(
    int Index,
    string Text,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

/// <summary><c>/v1/completions</c>: the response, or one streamed chunk (then usage and kvaq only on the last).</summary>
internal sealed record TextCompletion(string Id, string Object, long Created, string Model, IReadOnlyList<TextChoice> Choices, Usage? Usage, KvaqStats? Kvaq);

/// <summary>A chat message of a response.</summary>
internal sealed record ChatReply(string Role, string Content);

/// <summary>A choice of <c>/v1/chat/completions</c>.</summary>
internal sealed record ChatChoice(int Index, ChatReply Message, [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

/// <summary><c>/v1/chat/completions</c>.</summary>
internal sealed record ChatCompletion(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChoice> Choices, Usage Usage, KvaqStats Kvaq);

/// <summary>What a streamed chat chunk adds: the role (first chunk), text, or nothing (the last).</summary>
internal sealed record ChatDelta(string? Role, string? Content);

/// <summary>A choice of a streamed chat chunk.</summary>
internal sealed record ChatDeltaChoice(int Index, ChatDelta Delta, [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

/// <summary>One streamed chunk of <c>/v1/chat/completions</c> (usage and kvaq only on the last).</summary>
internal sealed record ChatCompletionChunk(string Id, string Object, long Created, string Model, IReadOnlyList<ChatDeltaChoice> Choices, Usage? Usage, KvaqStats? Kvaq);

/// <summary><c>POST /tokenize</c>.</summary>
internal sealed record TokenizeResponse(IReadOnlyList<int> Tokens);

/// <summary><c>POST /detokenize</c>.</summary>
internal sealed record DetokenizeResponse(string Content);

/// <summary>OpenAI's error body.</summary>
internal sealed record ErrorDetail(
    string Message,
    string Type,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Param,
    int Code);

/// <summary><c>{"error": {...}}</c>.</summary>
internal sealed record ErrorResponse(ErrorDetail Error);

/// <summary>The source-generated contracts of the server's responses.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(ModelList))]
[JsonSerializable(typeof(TextCompletion))]
[JsonSerializable(typeof(ChatCompletion))]
[JsonSerializable(typeof(ChatCompletionChunk))]
[JsonSerializable(typeof(TokenizeResponse))]
[JsonSerializable(typeof(DetokenizeResponse))]
[JsonSerializable(typeof(ErrorResponse))]
internal sealed partial class ServeJsonContext : JsonSerializerContext
{
    /// <summary>The contracts with the generator's options, writing text as it is (no \u003E for &gt;).</summary>
    public static ServeJsonContext Relaxed { get; } = new(new System.Text.Json.JsonSerializerOptions
    {
        PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}
