using System.Text.Json.Serialization;

namespace KvAdaQuant.Cli.Serve;

// The response bodies of kvaq serve, in OpenAI's shape (snake_case), serialized by the source generator below.

/// <summary><c>GET /health</c>.</summary>
internal sealed record HealthResponse(string Status);

/// <summary>
/// One entry of <c>GET /slots</c> (llama-server's <c>id</c>, <c>n_ctx</c>, <c>is_processing</c>), with the tokens its KV
/// cache holds, the bytes they take and the cache's spec.
/// </summary>
internal sealed record SlotState(
    int Id,
    [property: JsonPropertyName("n_ctx")] int NCtx,
    bool IsProcessing,
    int CacheTokens,
    long KvBytes,
    string Kv);

/// <summary>
/// <c>POST /slots/{id}?action=save|restore|erase</c> (llama-server's fields): the slot, the file (not for erase), the
/// tokens saved, restored or erased (one of <c>n_saved</c>, <c>n_restored</c>, <c>n_erased</c>), the file's bytes written
/// or read, and the time taken (<c>timings.save_ms</c> or <c>timings.restore_ms</c>).
/// </summary>
internal sealed record SlotActionResponse(
    int IdSlot,
    string? Filename = null,
    int? NSaved = null,
    long? NWritten = null,
    int? NRestored = null,
    long? NRead = null,
    int? NErased = null,
    SlotActionTimings? Timings = null);

/// <summary>The time a slot save or restore took, in milliseconds.</summary>
internal sealed record SlotActionTimings(double? SaveMs = null, double? RestoreMs = null);

/// <summary>
/// llama-server's <c>/completion</c> response (and the last event of its stream, with <c>content</c> empty): the text, the
/// slot that ran it, token counts, the settings used, why it stopped (<c>stop_type</c> <c>eos</c>, <c>limit</c> or
/// <c>word</c>, with the stop text in <c>stopping_word</c>), the tokens the slot's cache holds after it, the timings and
/// kvaq's own object.
/// </summary>
internal sealed record NativeCompletion(
    int Index,
    string Content,
    int IdSlot,
    bool Stop,
    string Model,
    int TokensPredicted,
    int TokensEvaluated,
    NativeSettings GenerationSettings,
    string Prompt,
    bool HasNewLine,
    bool Truncated,
    string StopType,
    string StoppingWord,
    int TokensCached,
    NativeTimings Timings,
    KvaqStats Kvaq);

/// <summary>A streamed piece of a <c>/completion</c> (<c>stop</c> false; the last event is a <see cref="NativeCompletion"/>).</summary>
internal sealed record NativeChunk(int Index, string Content, bool Stop, int IdSlot, int TokensEvaluated);

/// <summary>The settings a <c>/completion</c> ran with (llama-server's <c>generation_settings</c>, the fields kvaq has).</summary>
internal sealed record NativeSettings(
    [property: JsonPropertyName("n_ctx")] int NCtx,
    [property: JsonPropertyName("n_predict")] int NPredict,
    string Model,
    float Temperature,
    int TopK,
    float TopP,
    float MinP,
    float RepeatPenalty,
    int RepeatLastN,
    float PresencePenalty,
    float FrequencyPenalty,
    ulong Seed,
    IReadOnlyList<string> Stop,
    bool Stream,
    bool CachePrompt,
    float TypicalP,
    int Mirostat,
    float MirostatTau,
    float MirostatEta,
    float XtcProbability,
    float XtcThreshold,
    float DryMultiplier,
    float DryBase,
    int DryAllowedLength,
    int DryPenaltyLastN,
    IReadOnlyList<string> DrySequenceBreakers,
    float TopNSigma)
{
    /// <summary>The settings of <paramref name="r"/> on a server of <paramref name="ctx"/> positions serving <paramref name="model"/>.</summary>
    public static NativeSettings Of(CompletionRequest r, int ctx, string model, bool stream, bool cachePrompt) => new(
        ctx, r.MaxTokens ?? -1, model, r.Temperature, r.TopK, r.TopP, r.MinP, r.RepeatPenalty, r.RepeatLastN, r.PresencePenalty, r.FrequencyPenalty, r.Seed, r.Stop,
        stream, cachePrompt, r.TypicalP, r.Mirostat, r.MirostatTau, r.MirostatEta, r.XtcProbability, r.XtcThreshold, r.DryMultiplier, r.DryBase,
        r.DryAllowedLength, r.DryPenaltyLastN, r.DrySequenceBreakers, r.TopNSigma);
}

/// <summary>
/// llama-server's <c>timings</c>: prompt tokens run (not those from the cache) and their milliseconds, tokens predicted and
/// the milliseconds after the prompt, each also per token and per second (0 where there were none); with speculative
/// decoding (<c>serve --lookup-ngram</c> / <c>--model-draft</c>) the tokens guessed and kept, <c>draft_n</c> and
/// <c>draft_n_accepted</c>, as llama-server.
/// </summary>
internal sealed record NativeTimings(
    int PromptN,
    double PromptMs,
    double PromptPerTokenMs,
    double PromptPerSecond,
    int PredictedN,
    double PredictedMs,
    double PredictedPerTokenMs,
    double PredictedPerSecond,
    int? DraftN = null,
    int? DraftNAccepted = null);

/// <summary>
/// llama-server's <c>GET /props</c>: the settings a request that gives none gets, the slots, the model's path, the chat
/// template's name (kvaq's templates are built in, not Jinja text), kvaq's version; and the cache, device and the tool-call
/// format (<c>generic</c>, <c>llama3</c>, <c>hermes</c>).
/// </summary>
internal sealed record PropsResponse(
    NativeSettings DefaultGenerationSettings,
    int TotalSlots,
    string ModelPath,
    string ChatTemplate,
    string BuildInfo,
    string Kv,
    string Device,
    string ToolFormat);

/// <summary>One entry of <c>GET /v1/models</c>.</summary>
internal sealed record ModelEntry(string Id, string Object, long Created, string OwnedBy, ModelMeta Meta);

/// <summary>What kvaq adds to a model entry (the tool-call format too: <c>generic</c>, <c>llama3</c>, <c>hermes</c>).</summary>
internal sealed record ModelMeta(string Path, int Ctx, int VocabSize, string Kv, string ChatTemplate, string Device, string ToolFormat);

/// <summary><c>GET /v1/models</c>.</summary>
internal sealed record ModelList(string Object, IReadOnlyList<ModelEntry> Data);

/// <summary>Token counts of a request.</summary>
internal sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>The <c>kvaq</c> extension object: the cache, where it runs (<c>cpu</c> or <c>cuda</c>) and the speed of the run.</summary>
internal sealed record KvaqStats(string Kv, long KvBytes, int Ctx, string StopReason, int CachedTokens, double PrefillTokensPerSecond, double DecodeTokensPerSecond, string Device);

/// <summary>A choice of <c>/v1/completions</c> (whole or streamed); <c>logprobs</c> null unless asked for, as OpenAI writes it.</summary>
internal sealed record TextChoice(
    int Index,
    string Text,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] CompletionLogprobs? Logprobs = null);

/// <summary>
/// OpenAI's legacy completions <c>logprobs</c>: per token its text, log-probability (null for a first prompt token),
/// the most likely tokens as text → log-probability (null where there is no log-probability), and where its text starts.
/// </summary>
internal sealed record CompletionLogprobs(
    IReadOnlyList<string> Tokens,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] IReadOnlyList<float?> TokenLogprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] IReadOnlyList<Dictionary<string, float>?> TopLogprobs,
    IReadOnlyList<int> TextOffset)
{
    public static CompletionLogprobs Of(IReadOnlyList<ServedLogprob> entries) => new(
        [.. entries.Select(e => e.Text)],
        [.. entries.Select(e => e.Logprob)],
        [.. entries.Select(e => e.Top is null ? null : TopDictionary(e.Top))],
        [.. entries.Select(e => e.Offset)]);

    // Text → log-probability, most likely first; two tokens with the same text keep the likelier one.
    private static Dictionary<string, float> TopDictionary(IReadOnlyList<(string Text, int[] Bytes, float Logprob)> top)
    {
        var d = new Dictionary<string, float>();
        foreach (var t in top)
        {
            d.TryAdd(t.Text, t.Logprob);
        }

        return d;
    }
}

/// <summary>One token of chat <c>logprobs.content</c>.</summary>
internal sealed record ChatTokenLogprob(string Token, float Logprob, IReadOnlyList<int> Bytes, IReadOnlyList<ChatTopLogprob> TopLogprobs);

/// <summary>One of the most likely tokens of a chat <c>logprobs.content</c> entry.</summary>
internal sealed record ChatTopLogprob(string Token, float Logprob, IReadOnlyList<int> Bytes);

/// <summary>Chat <c>logprobs</c>: the reply's tokens.</summary>
internal sealed record ChatLogprobs(IReadOnlyList<ChatTokenLogprob> Content)
{
    public static ChatLogprobs Of(IReadOnlyList<ServedLogprob> entries) => new(
        [.. entries.Select(e => new ChatTokenLogprob(e.Text, e.Logprob ?? 0f, e.Bytes, [.. (e.Top ?? []).Select(t => new ChatTopLogprob(t.Text, t.Logprob, t.Bytes))]))]);
}

/// <summary><c>/v1/completions</c>: the response, or one streamed chunk (then usage and kvaq only on the last).</summary>
internal sealed record TextCompletion(string Id, string Object, long Created, string Model, IReadOnlyList<TextChoice> Choices, Usage? Usage, KvaqStats? Kvaq);

/// <summary>
/// A chat message of a response: its text (null when the reply only calls tools, as OpenAI writes it) and the tools it
/// calls (left out when none).
/// </summary>
internal sealed record ChatReply(
    string Role,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Content,
    IReadOnlyList<ServedToolCall>? ToolCalls = null);

/// <summary>A tool call of a reply: OpenAI's <c>{"id": "call_...", "type": "function", "function": {"name", "arguments"}}</c>.</summary>
internal sealed record ServedToolCall(string Id, string Type, ServedToolFunction Function);

/// <summary>The function a call names and its arguments (JSON text).</summary>
internal sealed record ServedToolFunction(string Name, string Arguments);

/// <summary>
/// A streamed piece of a tool call (OpenAI's <c>delta.tool_calls[i]</c>): its index in the reply's calls; the first piece
/// of a call has its id, type and name (arguments empty), the next its arguments.
/// </summary>
internal sealed record ToolCallDelta(int Index, string? Id, string? Type, ToolFunctionDelta Function);

/// <summary>The function of a <see cref="ToolCallDelta"/>: its name (first piece) or a piece of its arguments.</summary>
internal sealed record ToolFunctionDelta(string? Name, string? Arguments);

/// <summary>A choice of <c>/v1/chat/completions</c>; <c>logprobs</c> null unless asked for.</summary>
internal sealed record ChatChoice(
    int Index,
    ChatReply Message,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] ChatLogprobs? Logprobs = null);

/// <summary><c>/v1/chat/completions</c>.</summary>
internal sealed record ChatCompletion(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChoice> Choices, Usage Usage, KvaqStats Kvaq);

/// <summary>What a streamed chat chunk adds: the role (first chunk), text, a piece of a tool call, or nothing (the last).</summary>
internal sealed record ChatDelta(string? Role, string? Content, IReadOnlyList<ToolCallDelta>? ToolCalls = null);

/// <summary>A choice of a streamed chat chunk.</summary>
internal sealed record ChatDeltaChoice(
    int Index,
    ChatDelta Delta,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason,
    ChatLogprobs? Logprobs = null);

/// <summary>One streamed chunk of <c>/v1/chat/completions</c> (usage and kvaq only on the last).</summary>
internal sealed record ChatCompletionChunk(string Id, string Object, long Created, string Model, IReadOnlyList<ChatDeltaChoice> Choices, Usage? Usage, KvaqStats? Kvaq);

/// <summary><c>POST /tokenize</c>.</summary>
internal sealed record TokenizeResponse(IReadOnlyList<int> Tokens);

/// <summary>llama-server's <c>POST /apply-template</c>: the messages rendered by the chat template, as a chat completion's prompt.</summary>
internal sealed record ApplyTemplateResponse(string Prompt);

/// <summary>One vector of <c>/v1/embeddings</c> (<c>encoding_format</c> float).</summary>
internal sealed record EmbeddingEntry(string Object, int Index, IReadOnlyList<float> Embedding);

/// <summary>One vector of <c>/v1/embeddings</c> with <c>encoding_format</c> base64 (the floats' little-endian bytes).</summary>
internal sealed record EmbeddingEntryBase64(string Object, int Index, string Embedding);

/// <summary>The tokens an embeddings request ran.</summary>
internal sealed record EmbeddingUsage(int PromptTokens, int TotalTokens);

/// <summary><c>POST /v1/embeddings</c>: one vector per input, in order.</summary>
internal sealed record EmbeddingList(string Object, IReadOnlyList<EmbeddingEntry> Data, string Model, EmbeddingUsage Usage);

/// <summary><c>POST /v1/embeddings</c> with <c>encoding_format</c> base64.</summary>
internal sealed record EmbeddingListBase64(string Object, IReadOnlyList<EmbeddingEntryBase64> Data, string Model, EmbeddingUsage Usage);

/// <summary>A token of <c>POST /tokenize</c> with <c>with_pieces</c>: its id and text (a string when its bytes are whole UTF-8 characters, else the byte values).</summary>
internal sealed record TokenPiece(int Id, System.Text.Json.JsonElement Piece);

/// <summary><c>POST /tokenize</c> with <c>with_pieces</c>.</summary>
internal sealed record TokenizePiecesResponse(IReadOnlyList<TokenPiece> Tokens);

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
[JsonSerializable(typeof(TokenizePiecesResponse))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(int[]))]
[JsonSerializable(typeof(DetokenizeResponse))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(List<SlotState>))]
[JsonSerializable(typeof(SlotActionResponse))]
[JsonSerializable(typeof(NativeCompletion))]
[JsonSerializable(typeof(NativeChunk))]
[JsonSerializable(typeof(PropsResponse))]
[JsonSerializable(typeof(ApplyTemplateResponse))]
[JsonSerializable(typeof(EmbeddingList))]
[JsonSerializable(typeof(EmbeddingListBase64))]
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
