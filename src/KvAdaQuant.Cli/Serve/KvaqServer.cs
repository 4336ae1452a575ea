using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using KvAdaQuant.Cli.Commands;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// The HTTP side of <c>kvaq serve</c>: Kestrel with minimal-API endpoints in OpenAI's and llama-server's shapes over one
/// <see cref="ServedModel"/>, requests served one at a time. Each request is logged as one line on stderr.
/// </summary>
internal sealed partial class KvaqServer
{
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();
    private readonly ServedModel _model;
    private readonly byte[]? _apiKey;
    private readonly TextWriter _log;
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    private CancellationToken _stopping;

    public KvaqServer(ServedModel model, string? apiKey, TextWriter log)
    {
        _model = model;
        _apiKey = apiKey is null ? null : Encoding.UTF8.GetBytes(apiKey);
        _log = log;
    }

    /// <summary>Paths answered without the API key (as llama-server's public endpoints).</summary>
    private static readonly HashSet<string> PublicPaths = new(StringComparer.Ordinal) { "/health", "/v1/health", "/v1/models", "/models" };

    /// <summary>
    /// Listens on <paramref name="address"/>:<paramref name="port"/> (0: a free port), calls <paramref name="started"/> with
    /// the URL it listens on, and serves until Ctrl+C, SIGTERM or <paramref name="stop"/>; requests still generating are
    /// cancelled then.
    /// </summary>
    public async Task RunAsync(IPAddress address, int port, Action<string> started, CancellationToken stop = default)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));
        builder.WebHost.UseKestrel(o =>
        {
            o.AddServerHeader = false;
            o.Listen(address, port);
        });
        await using var app = builder.Build();
        _stopping = app.Lifetime.ApplicationStopping;
        using var stopRegistration = stop.Register(() => app.Lifetime.StopApplication());

        app.Use(Log);
        app.Use(Authorize);
        app.UseStatusCodePages(c => c.HttpContext.Response.StatusCode switch
        {
            404 => WriteError(c.HttpContext, new ServeRequestException(404, $"no endpoint {c.HttpContext.Request.Path}; kvaq serve has /health, /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings, /completion, /props, /tokenize, /detokenize, /apply-template, /slots, /slots/{{id}}?action=save|restore|erase and /metrics", null, "not_found_error")),
            405 => WriteError(c.HttpContext, new ServeRequestException(405, $"{c.HttpContext.Request.Method} is not allowed on {c.HttpContext.Request.Path}")),
            _ => Task.CompletedTask,
        });

        app.MapGet("/health", c => Write(c, 200, new HealthResponse("ok"), ServeJsonContext.Relaxed.HealthResponse));
        app.MapGet("/v1/models", Models);
        app.MapGet("/models", Models);
        app.MapPost("/v1/completions", c => Complete(c, chat: false));
        app.MapPost("/v1/chat/completions", c => Complete(c, chat: true));
        app.MapPost("/completion", NativeComplete);
        app.MapPost("/completions", NativeComplete);
        app.MapGet("/metrics", Metrics);
        app.MapGet("/slots", Slots);
        app.MapGet("/props", Props);
        app.MapPost("/slots/{id}", SlotAction);
        app.MapPost("/tokenize", Tokenize);
        app.MapPost("/detokenize", Detokenize);
        app.MapPost("/apply-template", ApplyTemplate);
        app.MapPost("/v1/embeddings", Embeddings);

        await app.StartAsync(stop);
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        started(addresses.First());
        await app.WaitForShutdownAsync();
    }

    private async Task Log(HttpContext c, RequestDelegate next)
    {
        var sw = Stopwatch.StartNew();
        try
        {
            await next(c);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A bug: answered with a 500 in OpenAI's shape (when nothing was sent yet) and logged, the server goes on.
            c.Items["kvaq.note"] = $"unexpected {e.GetType().Name}: {CliRunner.Message(e)}";
            if (Environment.GetEnvironmentVariable(CliRunner.StackTraceVariable) == "1")
            {
                lock (_log)
                {
                    _log.WriteLine(e);
                }
            }

            if (!c.Response.HasStarted)
            {
                c.Response.Clear();
                await Write(c, 500, new ErrorResponse(new ErrorDetail($"unexpected {e.GetType().Name}: {CliRunner.Message(e)} (a bug in kvaq)", "server_error", null, 500)), ServeJsonContext.Relaxed.ErrorResponse);
            }
        }

        string note = c.Items.TryGetValue("kvaq.note", out var n) ? $": {n}" : string.Empty;
        lock (_log)
        {
            _log.WriteLine($"[{c.Request.Method} {c.Request.Path} {c.Response.StatusCode} in {sw.Elapsed.TotalMilliseconds:F0} ms{note}]");
            _log.Flush();
        }
    }

    // With --api-key, every path but the public ones needs "Authorization: Bearer KEY" (or "X-Api-Key: KEY").
    private Task Authorize(HttpContext c, RequestDelegate next)
    {
        if (_apiKey is null || PublicPaths.Contains(c.Request.Path.Value ?? string.Empty))
        {
            return next(c);
        }

        string? given = null;
        string authorization = c.Request.Headers.Authorization.ToString();
        if (authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            given = authorization["Bearer ".Length..].Trim();
        }
        else if (c.Request.Headers.TryGetValue("X-Api-Key", out var header))
        {
            given = header.ToString();
        }

        if (given is not null && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), _apiKey))
        {
            return next(c);
        }

        c.Response.Headers.WWWAuthenticate = "Bearer";
        return WriteError(c, new ServeRequestException(
            401,
            given is null ? "no API key: this server needs \"Authorization: Bearer KEY\" (kvaq serve --api-key)" : "invalid API key",
            null,
            "authentication_error"));
    }

    private Task Models(HttpContext c) => Write(
        c,
        200,
        new ModelList("list", [new ModelEntry(_model.Id, "model", _created, "kvaq", new ModelMeta(_model.Path, _model.Ctx, _model.Tokenizer.VocabSize, _model.Kv, _model.Template.Name, _model.Device, _model.ToolFormat.Name))]),
        ServeJsonContext.Relaxed.ModelList);

    // Prometheus' text format, with kvaq serve --metrics (llama-server's --metrics); else 501 as llama-server answers.
    private Task Metrics(HttpContext c)
    {
        if (_model.Metrics is not { } metrics)
        {
            return WriteError(c, new ServeRequestException(501, "this server does not serve /metrics; start it with --metrics", null, "not_supported_error"));
        }

        c.Response.StatusCode = 200;
        c.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        return c.Response.WriteAsync(metrics.Render(_model), _stopping);
    }

    // llama-server's GET /slots: each slot's id, context, whether a request holds it, and kvaq's cache figures.
    private Task Slots(HttpContext c) => Write(
        c,
        200,
        _model.SlotStates().Select(s => new SlotState(s.Id, _model.Ctx, s.Busy, s.CacheTokens, s.KvBytes, _model.Kv)).ToList(),
        ServeJsonContext.Relaxed.ListSlotState);

    private async Task Tokenize(HttpContext c)
    {
        try
        {
            using var doc = await ReadBody(c);
            var body = doc.RootElement;
            string content = CompletionRequest.Field(body, "content") is { } t
                ? t.ValueKind == JsonValueKind.String ? t.GetString()! : throw CompletionRequest.Invalid("content", $"content must be a string, got {CompletionRequest.Raw(t)}")
                : throw CompletionRequest.Invalid("content", "content is required (the text to tokenize)");
            bool addSpecial = CompletionRequest.Flag(body, "add_special", absent: false);
            bool parseSpecial = CompletionRequest.Flag(body, "parse_special", absent: true);
            var tokens = _model.Tokenizer.Encode(content, addSpecial, parseSpecial);
            if (!CompletionRequest.Flag(body, "with_pieces", absent: false))
            {
                await Write(c, 200, new TokenizeResponse(tokens), ServeJsonContext.Relaxed.TokenizeResponse);
                return;
            }

            // llama-server's with_pieces: each token's text after the one before it, or its bytes where they are not whole characters.
            var pieces = new List<TokenPiece>(tokens.Count);
            var strict = new UTF8Encoding(false, throwOnInvalidBytes: true);
            int previous = -1;
            foreach (int id in tokens)
            {
                byte[] bytes = _model.Tokenizer.DecodeBytes(previous, id);
                JsonElement piece;
                try
                {
                    piece = JsonSerializer.SerializeToElement(strict.GetString(bytes), ServeJsonContext.Relaxed.String);
                }
                catch (DecoderFallbackException)
                {
                    piece = JsonSerializer.SerializeToElement(bytes.Select(b => (int)b).ToArray(), ServeJsonContext.Relaxed.Int32Array);
                }

                pieces.Add(new TokenPiece(id, piece));
                previous = id;
            }

            await Write(c, 200, new TokenizePiecesResponse(pieces), ServeJsonContext.Relaxed.TokenizePiecesResponse);
        }
        catch (ServeRequestException e)
        {
            await WriteError(c, e);
        }
    }

    private async Task Detokenize(HttpContext c)
    {
        try
        {
            using var doc = await ReadBody(c);
            if (CompletionRequest.Field(doc.RootElement, "tokens") is not { ValueKind: JsonValueKind.Array } array)
            {
                throw CompletionRequest.Invalid("tokens", CompletionRequest.Field(doc.RootElement, "tokens") is { } t
                    ? $"tokens must be an array of token ids, got {CompletionRequest.Raw(t)}"
                    : "tokens is required (an array of token ids)");
            }

            int vocab = _model.Tokenizer.VocabSize;
            var tokens = new List<int>();
            foreach (var e in array.EnumerateArray())
            {
                string at = $"tokens[{tokens.Count}]";
                tokens.Add(e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0 && id < vocab
                    ? id
                    : throw CompletionRequest.Invalid("tokens", $"{at}: {CompletionRequest.Raw(e)} is not a token id (0..{vocab - 1})"));
            }

            await Write(c, 200, new DetokenizeResponse(_model.Tokenizer.Decode(tokens)), ServeJsonContext.Relaxed.DetokenizeResponse);
        }
        catch (ServeRequestException e)
        {
            await WriteError(c, e);
        }
    }

    private async Task Complete(HttpContext c, bool chat)
    {
        CompletionRequest request;
        List<List<int>> prompts;
        try
        {
            using var doc = await ReadBody(c);
            request = CompletionRequest.Parse(doc.RootElement, chat, _model.Defaults);
            request = chat ? _model.WithTools(request) : request;
            prompts = request.Prompts is { } batch
                ? [.. batch.Select((_, i) => PromptTokens(request.ForTask(i * request.N), chat, $"prompt[{i}]"))]
                : [PromptTokens(request, chat)];
        }
        catch (ServeRequestException e)
        {
            await WriteError(c, e);
            return;
        }

        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(c.RequestAborted, _stopping);
        var metrics = _model.Metrics;
        metrics?.Queued();
        try
        {
            await _model.Gate.WaitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            metrics?.Left();
            return; // the client left (or the server stops) while queued
        }

        metrics?.Started();
        var slots = _model.TakeForChoices(prompts[0], request.Choices);
        try
        {
            string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            if (request.Stream)
            {
                await Stream(c, slots, request, prompts, chat, id, created, cancel);
            }
            else
            {
                var runs = await Task.Factory.StartNew(
                    () => _model.GenerateChoices(slots, prompts, request, cancel.Token),
                    cancel.Token,
                    TaskCreationOptions.LongRunning,
                    TaskScheduler.Default);
                bool cancelled = ServedModel.Cancelled(runs, request.Choices);
                Note(c, runs.Select(r => r.Result).ToList(), cancelled ? "cancelled" : runs[^1].FinishReason, runs[0].CachedTokens);
                if (cancelled)
                {
                    return;
                }

                var usage = Usage(runs.Select(r => r.Result).ToList(), request.N);
                var stats = Stats(runs[0].Result, runs[0].CachedTokens);
                if (chat)
                {
                    var choices = runs.Select((r, i) =>
                    {
                        var (reply, finish) = Reply(request, r.Text, r.FinishReason);
                        return new ChatChoice(i, reply, finish, r.Logprobs is null ? null : ChatLogprobs.Of(r.Logprobs));
                    }).ToList();
                    await Write(c, 200, new ChatCompletion(id, "chat.completion", created, _model.Id, choices, usage, stats), ServeJsonContext.Relaxed.ChatCompletion);
                }
                else
                {
                    var choices = runs.Select((r, i) => new TextChoice(i, r.Text, r.FinishReason, r.Logprobs is null ? null : CompletionLogprobs.Of(r.Logprobs))).ToList();
                    await Write(c, 200, new TextCompletion(id, "text_completion", created, _model.Id, choices, usage, stats), ServeJsonContext.Relaxed.TextCompletion);
                }
            }
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            // the client left: nothing to answer
        }
        finally
        {
            foreach (var slot in slots)
            {
                _model.Release(slot);
            }

            metrics?.Finished();
        }
    }

    // A chat reply: with tools the text read back by the model's tool format (its calls, finish reason tool_calls; a reply
    // that is no well-formed call stays text), else the text as it is.
    private (ChatReply Reply, string Finish) Reply(CompletionRequest request, string text, string finish)
    {
        if (!request.ToolsActive)
        {
            return (new ChatReply("assistant", text), finish);
        }

        var (content, calls, reason) = ReadReply(request, text, finish);
        return (new ChatReply("assistant", content, calls.Count == 0 ? null : [.. calls.Select(c => new ServedToolCall(c.Id, "function", new ServedToolFunction(c.Name, c.Arguments)))]), reason);
    }

    // A whole reply read back by the model's tool format: its content (the text as it is, "" for none, when it calls no
    // tool; null for none when it does), its calls, and the finish reason (tool_calls when it calls any).
    private (string? Content, IReadOnlyList<ChatToolCall> Calls, string Finish) ReadReply(CompletionRequest request, string text, string finish)
    {
        var parsed = _model.ToolFormat.Parse(text, request.Tools!);
        return parsed.ToolCalls.Count == 0 ? (parsed.Content ?? string.Empty, [], finish) : (parsed.Content, parsed.ToolCalls, "tool_calls");
    }

    // The request's prompt tokens, refused when they or its logit_bias do not fit the model; `at` names a batch's prompt.
    private List<int> PromptTokens(CompletionRequest request, bool chat, string at = "prompt")
    {
        var prompt = _model.PromptTokens(request, at);
        int vocab = _model.Tokenizer.VocabSize;
        if (request.LogitBias.Keys.Where(t => t >= vocab).Select(t => (int?)t).FirstOrDefault() is { } outside)
        {
            throw CompletionRequest.Invalid("logit_bias", $"logit_bias: token {outside} is not a token id of this model (its vocabulary has {vocab})");
        }

        if (prompt.Count > _model.Ctx)
        {
            throw CompletionRequest.Invalid(
                chat ? "messages" : "prompt",
                $"the {(chat ? "conversation" : at)} has {prompt.Count} tokens (BOS included) but the context holds {_model.Ctx} (kvaq serve --ctx)");
        }

        return prompt;
    }

    // Server-sent events: per choice (n of them, one after another) a chunk per piece of text as it is final and a chunk
    // with its finish reason, the last choice's with the usage and kvaq's statistics too, then [DONE]. The model runs on
    // its own thread; the pieces and the ends of the choices come through a channel.
    private async Task Stream(HttpContext c, IReadOnlyList<RequestGenerator> slots, CompletionRequest request, IReadOnlyList<List<int>> prompts, bool chat, string id, long created, CancellationTokenSource cancel)
    {
        c.Response.StatusCode = 200;
        c.Response.ContentType = "text/event-stream";
        c.Response.Headers.CacheControl = "no-cache";
        var events = Channel.CreateUnbounded<StreamEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = slots.Count == 1 });
        var run = Task.Factory.StartNew(
            () =>
            {
                try
                {
                    return _model.GenerateChoices(
                        slots,
                        prompts,
                        request,
                        cancel.Token,
                        onStart: choice => events.Writer.TryWrite(new StreamEvent(choice, null, [], null)),
                        onText: (choice, s, lp) => events.Writer.TryWrite(new StreamEvent(choice, s, lp, null)),
                        onFinish: (choice, finish) => events.Writer.TryWrite(new StreamEvent(choice, null, [], finish)));
                }
                finally
                {
                    events.Writer.TryComplete();
                }
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default);

        bool withLogprobs = request.Logprobs is not null;
        var ended = new List<(int Choice, string Finish)>();

        // With tools a choice's text is read as it comes (ToolStream): its calls are sent in pieces as they are written, its
        // content as it comes as far as it is known (ChatToolFormat.ContentSoFar: text that cannot be a call, Hermes text
        // before a call, a generic response's string), the rest when the choice ends.
        bool tools = chat && request.ToolsActive;
        var held = new Dictionary<int, ToolStream>();
        try
        {
            await foreach (var e in events.Reader.ReadAllAsync(cancel.Token))
            {
                if (e.Finish is not null)
                {
                    string finish = tools ? await SendToolReply(e.Choice, e.Finish) : e.Finish;
                    ended.Add((e.Choice, finish)); // written once the run's usage is known (the last one carries it)
                    if (e.Choice + 1 < request.Choices)
                    {
                        await Finish(e.Choice, finish, null, null);
                    }
                }
                else if (e.Text is not null && tools)
                {
                    var h = held.TryGetValue(e.Choice, out var known) ? known : held[e.Choice] = new ToolStream();
                    h.Text.Append(e.Text);
                    if (withLogprobs)
                    {
                        h.Logprobs.AddRange(e.Logprobs);
                    }

                    await SendToolPieces(e.Choice, h);
                }
                else if (e.Text is null)
                {
                    if (chat)
                    {
                        await Event(c, Chunk(id, created, e.Choice, new ChatDelta("assistant", string.Empty), null, null, null), cancel.Token);
                    }
                }
                else if (chat)
                {
                    await Event(c, Chunk(id, created, e.Choice, new ChatDelta(null, e.Text), null, null, null, withLogprobs ? ChatLogprobs.Of(e.Logprobs) : null), cancel.Token);
                }
                else
                {
                    var lp = withLogprobs ? CompletionLogprobs.Of(e.Logprobs) : null;
                    await Event(c, new TextCompletion(id, "text_completion", created, _model.Id, [new TextChoice(e.Choice, e.Text, null, lp)], null, null), cancel.Token);
                }
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            await cancel.CancelAsync(); // the client left: stop generating
        }

        var runs = await run;
        bool cancelled = ServedModel.Cancelled(runs, request.Choices);
        Note(c, runs.Select(r => r.Result).ToList(), cancelled ? "cancelled" : runs[^1].FinishReason, runs[0].CachedTokens);
        if (cancelled || ended.Count < request.Choices)
        {
            return;
        }

        await Finish(request.Choices - 1, ended[^1].Finish, Usage(runs.Select(r => r.Result).ToList(), request.N), Stats(runs[0].Result, runs[0].CachedTokens));
        await c.Response.Body.WriteAsync(Done, cancel.Token);
        await c.Response.Body.FlushAsync(cancel.Token);

        // The calls of a choice's text so far (ChatToolFormat.ParsePartial), as OpenAI and llama-server stream them: a call's
        // first delta with its index, id, type, name and arguments "", then deltas with only its index and the next piece of
        // its arguments; the text before the first call (Hermes) goes first as content. Log-probabilities ride on the next delta sent.
        async Task SendToolPieces(int choice, ToolStream h)
        {
            string text = h.Text.ToString();
            if (h.Calls.Count == 0)
            {
                if (h.Whatever || _model.ToolFormat.IsTextWhateverFollows(text))
                {
                    // Text whatever follows (llama3, generic): streamed as it comes, as without tools.
                    h.Whatever = true;
                    await SendContent(choice, h, text);
                    return;
                }

                if (_model.ToolFormat.ContentSoFar(text) is { } soFar)
                {
                    await SendContent(choice, h, soFar);
                }
            }

            var partial = _model.ToolFormat.ParsePartial(text, request.Tools!);
            for (int i = 0; i < partial.Calls.Count; i++)
            {
                var (name, arguments) = partial.Calls[i];
                if (i == h.Calls.Count)
                {
                    if (i == 0 && partial.Content is { } content)
                    {
                        await SendContent(choice, h, content);
                    }

                    await StartCall(choice, h, ChatToolFormat.NewCallId(), name);
                }

                var sent = h.Calls[i];
                if (sent.Name == name && arguments.Length > sent.Arguments.Length && arguments.StartsWith(sent.Arguments, StringComparison.Ordinal))
                {
                    await SendPiece(choice, h, i, arguments[sent.Arguments.Length..]);
                    h.Calls[i] = sent with { Arguments = arguments };
                }
            }
        }

        // The part of content (the choice's content as known now) not sent yet, recorded as sent. What was sent is a prefix
        // of it, or of it trimmed at the start (the content trimmed once calls follow, Hermes); where it is neither (which
        // ContentSoFar rules out) nothing more is sent rather than text twice.
        async Task SendContent(int choice, ToolStream h, string content)
        {
            string sent = h.Content;
            if (!content.StartsWith(sent, StringComparison.Ordinal))
            {
                sent = sent.TrimStart();
                if (!content.StartsWith(sent, StringComparison.Ordinal))
                {
                    return;
                }
            }

            if (content.Length > sent.Length)
            {
                await Event(c, Chunk(id, created, choice, new ChatDelta(null, content[sent.Length..]), null, null, null, h.TakeLogprobs(withLogprobs)), cancel.Token);
                h.Content = content;
            }
        }

        // A call's first delta (its index, id, type, name and arguments ""), recorded as sent.
        async Task StartCall(int choice, ToolStream h, string callId, string name)
        {
            await Event(c, Chunk(id, created, choice, new ChatDelta(null, null, [new ToolCallDelta(h.Calls.Count, callId, "function", new ToolFunctionDelta(name, string.Empty))]), null, null, null, h.TakeLogprobs(withLogprobs)), cancel.Token);
            h.Calls.Add((callId, name, string.Empty));
        }

        Task SendPiece(int choice, ToolStream h, int call, string piece) =>
            Event(c, Chunk(id, created, choice, new ChatDelta(null, null, [new ToolCallDelta(call, null, null, new ToolFunctionDelta(null, piece))]), null, null, null, h.TakeLogprobs(withLogprobs)), cancel.Token);

        // A choice's end: the whole text read back (as the whole reply is). Where it is the calls streamed so far, what they
        // lack (and any later call) is sent; where it calls nothing, the part of its text not streamed yet; where calls were
        // streamed but the whole text is not them (the reply was cut short: max_tokens, a stop word), its text as the whole
        // reply gives it, after them (less the text before them streamed already). Returns the finish reason.
        async Task<string> SendToolReply(int choice, string finish)
        {
            var h = held.Remove(choice, out var known) ? known : new ToolStream();
            var (content, calls, reason) = ReadReply(request, h.Text.ToString(), finish);
            bool same = calls.Count >= h.Calls.Count && h.Calls.Select((s, i) => calls[i].Name == s.Name && calls[i].Arguments.StartsWith(s.Arguments, StringComparison.Ordinal)).All(x => x);
            if (calls.Count == 0 || !same)
            {
                // No calls (or calls were streamed but the reply is not them: cut short): the text the whole reply gives,
                // less what was streamed of it already (Hermes text before a call).
                await SendContent(choice, h, content ?? string.Empty);
                if (h.Logprobs.Count > 0)
                {
                    // Entries of tokens whose text was sent already, or that have none.
                    await Event(c, Chunk(id, created, choice, new ChatDelta(null, string.Empty), null, null, null, h.TakeLogprobs(withLogprobs)), cancel.Token);
                }

                return calls.Count == 0 ? reason : finish;
            }

            if (content is { Length: > 0 })
            {
                await SendContent(choice, h, content);
            }

            for (int i = 0; i < calls.Count; i++)
            {
                var call = calls[i];
                if (i == h.Calls.Count)
                {
                    await StartCall(choice, h, call.Id, call.Name);
                }

                if (call.Arguments.Length > h.Calls[i].Arguments.Length)
                {
                    await SendPiece(choice, h, i, call.Arguments[h.Calls[i].Arguments.Length..]);
                }
            }

            if (h.Logprobs.Count > 0)
            {
                await SendPiece(choice, h, calls.Count - 1, string.Empty); // the tokens after the last piece (the call's closing text)
            }

            return reason;
        }

        async Task Finish(int choice, string finish, Usage? usage, KvaqStats? stats)
        {
            if (chat)
            {
                await Event(c, Chunk(id, created, choice, new ChatDelta(null, null), finish, usage, stats), cancel.Token);
            }
            else
            {
                await Event(c, new TextCompletion(id, "text_completion", created, _model.Id, [new TextChoice(choice, string.Empty, finish)], usage, stats), cancel.Token);
            }
        }
    }

    private ChatCompletionChunk Chunk(string id, long created, int choice, ChatDelta delta, string? finish, Usage? usage, KvaqStats? stats, ChatLogprobs? logprobs = null) =>
        new(id, "chat.completion.chunk", created, _model.Id, [new ChatDeltaChoice(choice, delta, finish, logprobs)], usage, stats);

    private static async Task Event(HttpContext c, TextCompletion chunk, CancellationToken cancel) =>
        await Event(c, JsonSerializer.SerializeToUtf8Bytes(chunk, ServeJsonContext.Relaxed.TextCompletion), cancel);

    private static async Task Event(HttpContext c, ChatCompletionChunk chunk, CancellationToken cancel) =>
        await Event(c, JsonSerializer.SerializeToUtf8Bytes(chunk, ServeJsonContext.Relaxed.ChatCompletionChunk), cancel);

    private static async Task Event(HttpContext c, byte[] json, CancellationToken cancel)
    {
        var body = c.Response.Body;
        await body.WriteAsync("data: "u8.ToArray(), cancel);
        await body.WriteAsync(json, cancel);
        await body.WriteAsync("\n\n"u8.ToArray(), cancel);
        await body.FlushAsync(cancel);
    }

    // Each prompt counted once (runs are n per prompt, prompt by prompt), the completion tokens of every choice.
    private static Usage Usage(IReadOnlyList<GenerationResult> runs, int n)
    {
        int prompt = runs.Where((_, i) => i % n == 0).Sum(r => r.PromptTokens.Count), completion = runs.Sum(r => r.Tokens.Count);
        return new(prompt, completion, prompt + completion);
    }

    private KvaqStats Stats(GenerationResult r, int cached) => new(_model.Kv, r.KvBytes, _model.Ctx, r.StopReason, cached, r.PrefillTokensPerSecond, r.DecodeTokensPerSecond, _model.Device);

    private static void Note(HttpContext c, IReadOnlyList<GenerationResult> runs, string finish, int cached)
    {
        var r = runs[0];
        string choices = runs.Count > 1 ? $" in {runs.Count} choices" : string.Empty;
        c.Items["kvaq.note"] = $"{r.PromptTokens.Count} prompt tokens ({cached} from the cache), {runs.Sum(x => x.Tokens.Count)} generated{choices} ({finish}); prefill {r.PrefillTokensPerSecond:F1} tok/s, decode {r.DecodeTokensPerSecond:F1} tok/s; KV {r.KvBytes:N0} bytes";
    }

    // The body as a JSON object; anything else is a 400 naming the problem.
    private static async Task<JsonDocument> ReadBody(HttpContext c)
    {
        JsonDocument doc;
        try
        {
            doc = await JsonDocument.ParseAsync(c.Request.Body, default, c.RequestAborted);
        }
        catch (JsonException e)
        {
            throw new ServeRequestException(400, $"the request body is not valid JSON: {e.Message}");
        }
        catch (BadHttpRequestException e)
        {
            throw new ServeRequestException(e.StatusCode, $"the request body could not be read: {e.Message}");
        }

        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = doc.RootElement.ValueKind;
            doc.Dispose();
            throw new ServeRequestException(400, $"the request body must be a JSON object, got {kind.ToString().ToLowerInvariant()}");
        }

        if (JsonText.LoneSurrogate(doc.RootElement) is { } at)
        {
            doc.Dispose();
            throw new ServeRequestException(400, $"the request body's string at {at} {JsonText.LoneSurrogateProblem}");
        }

        return doc;
    }

    private static async Task Write<T>(HttpContext c, int status, T value, JsonTypeInfo<T> type)
    {
        c.Response.StatusCode = status;
        c.Response.ContentType = "application/json; charset=utf-8";
        await JsonSerializer.SerializeAsync(c.Response.Body, value, type, c.RequestAborted);
    }

    private static Task WriteError(HttpContext c, ServeRequestException e)
    {
        c.Items["kvaq.note"] = e.Message;
        return Write(c, e.Status, new ErrorResponse(new ErrorDetail(e.Message, e.Type, e.Param, e.Status)), ServeJsonContext.Relaxed.ErrorResponse);
    }

    // One event of a streamed request: a choice starting (no text, no finish), a piece of its text, or its end.
    private sealed record StreamEvent(int Choice, string? Text, IReadOnlyList<ServedLogprob> Logprobs, string? Finish);

    // A streamed choice's text with tools: the text so far, the log-probabilities not yet sent, the content and the calls
    // (id, name, arguments so far) sent.
    private sealed class ToolStream
    {
        public StringBuilder Text { get; } = new();

        public List<ServedLogprob> Logprobs { get; } = [];

        // The content sent so far.
        public string Content { get; set; } = string.Empty;

        // Whether the reply is text whatever follows (ChatToolFormat.IsTextWhateverFollows), streamed as it comes.
        public bool Whatever { get; set; }

        public List<(string Id, string Name, string Arguments)> Calls { get; } = [];

        // The log-probabilities not yet sent, for the next delta (null without logprobs), and none held after.
        public ChatLogprobs? TakeLogprobs(bool wanted)
        {
            if (!wanted || Logprobs.Count == 0)
            {
                return null;
            }

            var lp = ChatLogprobs.Of([.. Logprobs]);
            Logprobs.Clear();
            return lp;
        }
    }
}
