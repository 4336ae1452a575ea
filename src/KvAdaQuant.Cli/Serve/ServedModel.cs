using KvAdaQuant.Engine;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// The one model kvaq serve holds, with its session (the caller's: the CPU engine's <see cref="InferenceSession"/> or the
/// GPU's <c>CudaDecodeSession</c>; one cache of <see cref="Ctx"/> positions, cleared for a request unless its prompt starts
/// with what the cache holds or a prefix it can be cut back to) and the queue that lets one request at a time use it.
/// </summary>
internal sealed class ServedModel : IDisposable
{
    private readonly IDecodeSession _session;
    private readonly List<RequestGenerator> _free;
    private readonly RequestGenerator[] _all;

    /// <param name="id">The model's name in responses.</param>
    /// <param name="path">Where it was loaded from.</param>
    /// <param name="session">The session every request runs on.</param>
    /// <param name="kv">The cache's spec or plan name (<c>fp32</c>, <c>k4v2</c>, a plan's name).</param>
    /// <param name="device"><c>cpu</c> or <c>cuda</c>.</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="template">The chat template.</param>
    /// <param name="defaults">Sampling settings for fields a request leaves out.</param>
    public ServedModel(string id, string path, IDecodeSession session, string kv, string device, ITokenizer tokenizer, ChatTemplate template, CompletionRequest defaults)
        : this(id, path, [session], kv, device, tokenizer, template, defaults)
    {
    }

    /// <summary>
    /// A model served with one slot per session (<c>kvaq serve --parallel</c>): that many requests generate at once, each
    /// in its own cache (sessions of a <see cref="BatchingEngine"/> decode their steps together).
    /// </summary>
    public ServedModel(string id, string path, IReadOnlyList<IDecodeSession> sessions, string kv, string device, ITokenizer tokenizer, ChatTemplate template, CompletionRequest defaults)
    {
        var session = sessions.Count > 0 ? sessions[0] : throw new ArgumentException("no sessions to serve", nameof(sessions));
        Id = id;
        Path = path;
        _session = session;
        Kv = kv;
        Device = device;
        Tokenizer = tokenizer;
        Template = template;
        Defaults = defaults;
        try
        {
            EndOfTurn = template.EndOfTurnToken(tokenizer);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--chat-template: {e.Message}", e);
        }

        _all = [.. sessions.Select(x => new RequestGenerator(x, tokenizer))];
        _free = [.. _all];
        Slots = sessions.Count;
        Gate = new SemaphoreSlim(Slots, Slots);
    }

    /// <summary>
    /// Speculative decoding for every request (<c>serve --lookup-ngram</c> / <c>--model-draft</c>), or null: set on each
    /// slot's generator. One slot on the CPU engine only (the draft model has one cache).
    /// </summary>
    public KvAdaQuant.Engine.Speculative.SpeculativeDecoding? Speculative
    {
        get => _all[0].Speculative;
        init
        {
            if (value is not null && (_all.Length != 1 || _all[0].Session is not InferenceSession))
            {
                throw new ArgumentException("speculative decoding (--lookup-ngram, --model-draft) serves one request at a time on the CPU engine: drop --parallel and --device cuda");
            }

            _all[0].Speculative = value;
        }
    }

    /// <summary>Requests that generate at once (each in its own cache).</summary>
    public int Slots { get; }

    /// <summary>The model's name in responses (its file or folder name).</summary>
    public string Id { get; }

    /// <summary>Where it was loaded from.</summary>
    public string Path { get; }

    public ITokenizer Tokenizer { get; }

    public ChatTemplate Template { get; }

    /// <summary>How tools, calls and results are written for the model (<see cref="ChatToolFormat.Detect"/>; generic by default).</summary>
    public ChatToolFormat ToolFormat { get; init; } = ChatToolFormat.Generic;

    /// <summary>The end-of-turn token of the template, or -1.</summary>
    public int EndOfTurn { get; }

    /// <summary>Sampling settings for fields a request leaves out (the command line's).</summary>
    public CompletionRequest Defaults { get; }

    /// <summary>Positions of the cache.</summary>
    public int Ctx => _session.Capacity;

    /// <summary>The cache's description (<c>fp32</c>, <c>k4v2</c>, a plan's name).</summary>
    public string Kv { get; }

    /// <summary>Where the model and the cache run: <c>cpu</c> or <c>cuda</c>.</summary>
    public string Device { get; }

    /// <summary>What the server has done, for <c>/metrics</c> (<c>kvaq serve --metrics</c>); null when not asked for.</summary>
    public ServeMetrics? Metrics { get; set; }

    /// <summary>One request at a time: held while a request generates.</summary>
    public SemaphoreSlim Gate { get; }

    /// <summary>
    /// The folder slot saves and restores read and write (<c>kvaq serve --slot-save-path</c>, llama-server's option), or
    /// null: then <c>POST /slots/{id}?action=save|restore</c> is refused.
    /// </summary>
    public string? SlotSavePath { get; init; }

    /// <summary>
    /// Slot <paramref name="id"/> (0 &lt;= id &lt; <see cref="Slots"/>) with one entry of <see cref="Gate"/>, for a slot
    /// action; null while a request holds it, or while every free slot is promised to requests already past the gate.
    /// Give it back with <see cref="Release"/>.
    /// </summary>
    public RequestGenerator? TakeSlot(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(id, Slots);
        if (!Gate.Wait(0))
        {
            return null;
        }

        lock (_free)
        {
            if (_free.Remove(_all[id]))
            {
                return _all[id];
            }
        }

        Gate.Release();
        return null;
    }

    /// <summary>The id of <paramref name="slot"/> (its index, as <see cref="SlotStates"/> lists it).</summary>
    public int SlotId(RequestGenerator slot) => Array.IndexOf(_all, slot);

    /// <summary>
    /// Why <paramref name="name"/> cannot name a slot file in <see cref="SlotSavePath"/>, or null when it can: a plain file
    /// name (as llama-server's filename check): not empty, at most 255 UTF-8 bytes, no folder separators, no control
    /// characters or any of <c>:*?"&lt;&gt;|</c>, no space at either end, not <c>.</c> or <c>..</c>, not ending in a dot.
    /// </summary>
    public static string? SlotFileNameProblem(string name)
    {
        if (name.Length == 0)
        {
            return "is empty";
        }

        if (System.Text.Encoding.UTF8.GetByteCount(name) > 255)
        {
            return "is longer than 255 bytes";
        }

        if (name is "." or "..")
        {
            return "is not a file name";
        }

        for (int i = 0; i < name.Length; i++)
        {
            char ch = name[i];
            if (ch is '/' or '\\')
            {
                return "holds a folder separator (give a file name; files live in --slot-save-path)";
            }

            if (char.IsHighSurrogate(ch) && i + 1 < name.Length && char.IsLowSurrogate(name[i + 1]))
            {
                i++; // a character beyond U+FFFF
                continue;
            }

            if (char.IsControl(ch) || char.IsSurrogate(ch) || ":*?\"<>|".Contains(ch, StringComparison.Ordinal))
            {
                return $"holds the character U+{(int)ch:X4}, which a slot file name may not";
            }
        }

        if (char.IsWhiteSpace(name[0]) || char.IsWhiteSpace(name[^1]))
        {
            return "starts or ends with a space";
        }

        return name[^1] == '.' ? "ends with a dot" : null;
    }

    /// <summary>
    /// A free slot for <paramref name="promptTokens"/> (the caller holds <see cref="Gate"/>): the one whose cache shares
    /// the longest prefix with the prompt (llama-server's slot choice by prompt similarity), else the first free one.
    /// Give it back with <see cref="Return"/>.
    /// </summary>
    public RequestGenerator Take(IReadOnlyList<int> promptTokens)
    {
        lock (_free)
        {
            if (_free.Count == 0)
            {
                throw new InvalidOperationException("no free slot: take one only while holding the gate");
            }

            int best = 0, longest = _free[0].ReusablePrefix(promptTokens);
            for (int i = 1; i < _free.Count; i++)
            {
                int prefix = _free[i].ReusablePrefix(promptTokens);
                if (prefix > longest)
                {
                    (best, longest) = (i, prefix);
                }
            }

            var slot = _free[best];
            _free.RemoveAt(best);
            return slot;
        }
    }

    /// <summary>
    /// Waits for a slot and takes it with its <see cref="Gate"/> entry: with <paramref name="wanted"/> -1 the free slot
    /// <see cref="Take"/> picks for <paramref name="promptTokens"/> once one is free, else slot <paramref name="wanted"/>
    /// once no request holds it (llama-server defers such a task until its slot is free). Null when
    /// <paramref name="cancel"/> fires while waiting. Give it back with <see cref="Release"/>.
    /// </summary>
    public async Task<RequestGenerator?> WaitForSlotAsync(IReadOnlyList<int> promptTokens, CancellationToken cancel, int wanted = -1)
    {
        try
        {
            if (wanted < 0)
            {
                await Gate.WaitAsync(cancel);
                return Take(promptTokens);
            }

            RequestGenerator? slot;
            while ((slot = TakeSlot(wanted)) is null)
            {
                await Task.Delay(10, cancel);
            }

            return slot;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            return null;
        }
    }

    /// <summary>Gives back a slot and its <see cref="Gate"/> entry (<see cref="Return"/>, then the gate).</summary>
    public void Release(RequestGenerator slot)
    {
        Return(slot);
        Gate.Release();
    }

    /// <summary>
    /// Each slot in order (its id is its index): whether a request holds it, the tokens its cache holds, and the bytes
    /// its KV cache takes (llama-server's <c>/slots</c>).
    /// </summary>
    public IReadOnlyList<(int Id, bool Busy, int CacheTokens, long KvBytes)> SlotStates()
    {
        lock (_free)
        {
            return [.. _all.Select((slot, id) => (id, !_free.Contains(slot), slot.Tokens.Count, slot.Session.ByteCount))];
        }
    }

    /// <summary>
    /// Gives back a slot <see cref="Take"/> handed out; its session goes idle (<see cref="IDecodeSession.Idle"/>), so the
    /// other slots' decode steps stop waiting for it.
    /// </summary>
    public void Return(RequestGenerator slot)
    {
        slot.Session.Idle();
        lock (_free)
        {
            _free.Add(slot);
        }
    }

    /// <summary>The compiled tool grammars of recent tool lists (<see cref="WithTools"/>).</summary>
    public ToolGrammarCache ToolGrammars { get; } = new();

    /// <summary>
    /// A chat request with the constraint of its tools (<see cref="CompletionRequest.WithToolFormat"/> in
    /// <see cref="ToolFormat"/>: for <c>auto</c> in llama3 and hermes the lazy grammar), compiled once per tool list and kept in
    /// <see cref="ToolGrammars"/>: a request with the same tools, format, <c>tool_choice</c> and <c>parallel_tool_calls</c>
    /// takes the same parsed grammar without converting a schema. Each tool's schema is checked (a 400 naming
    /// <c>tools[i].function.parameters</c> where the grammar converter cannot follow it), with <c>tool_choice</c>
    /// <c>none</c> too. A request without tools is returned as it is.
    /// </summary>
    public CompletionRequest WithTools(CompletionRequest request)
    {
        if (request.Tools is not { Count: > 0 } tools)
        {
            return request;
        }

        var compiled = ToolGrammars.GetOrAdd(ToolKey(request), () =>
        {
            if (!request.ToolsActive)
            {
                CompletionRequest.CheckToolSchemas(tools);
                return new ToolGrammar(null, null, null);
            }

            try
            {
                var r = request.WithToolFormat(ToolFormat, Tokenizer);
                return new ToolGrammar(r.Grammar, r.ParsedGrammar, r.GrammarTriggers);
            }
            catch (ServeRequestException)
            {
                CompletionRequest.CheckToolSchemas(tools); // the tool whose schema fails, named, where one does
                throw;
            }
        });
        return !request.ToolsActive
            ? request
            : request with { Grammar = compiled.Text, GrammarField = compiled.Text is null ? null : "tools", ParsedGrammar = compiled.Parsed, GrammarTriggers = compiled.Triggers };
    }

    // The cache key: what the compiled grammar depends on.
    private string ToolKey(CompletionRequest request)
    {
        var key = new System.Text.StringBuilder()
            .Append(ToolFormat.Name).Append('\n')
            .Append(request.ToolChoice.Mode).Append('\n')
            .Append(request.ToolChoice.Function).Append('\n')
            .Append(request.ParallelToolCalls).Append('\n');
        foreach (var t in request.Tools!)
        {
            // Names are letters, digits, _ and -; a description may hold anything, so its length goes first.
            key.Append(t.Name).Append('\n').Append(t.Description?.Length ?? -1).Append(':').Append(t.Description).Append('\n').Append(t.Parameters).Append('\n');
        }

        return key.ToString();
    }

    /// <summary>
    /// The prompt's tokens: BOS, then the text (for chat, the template's rendering with its control tokens, the tools offered,
    /// calls and results written in <see cref="ToolFormat"/>).
    /// </summary>
    public List<int> PromptTokens(CompletionRequest request, string at = "prompt")
    {
        if (request.Messages is { } messages)
        {
            string text = RenderChat(request);
            return Tokenizer.Encode(text, addBos: true, parseSpecial: Template != ChatTemplate.None);
        }

        return InputTokens(request.Prompt, request.PromptIds, "prompt", at);
    }

    /// <summary>A chat request's prompt text: its messages and the tools it offers, in <see cref="ToolFormat"/>, by <see cref="Template"/>.</summary>
    public string RenderChat(CompletionRequest request) =>
        ToolFormat.Render(Template, request.Messages ?? [], request.OfferedTools, request.ParallelToolCalls);

    /// <summary>
    /// A completions prompt's or an embeddings input's tokens: token ids as given (each checked against the vocabulary;
    /// <paramref name="field"/> and <paramref name="at"/> name it in the error), or BOS and the text.
    /// </summary>
    public List<int> InputTokens(string? text, IReadOnlyList<int>? ids, string field, string at)
    {
        if (ids is not null)
        {
            int bad = ids.ToList().FindIndex(t => t >= Tokenizer.VocabSize);
            return bad < 0
                ? [.. ids]
                : throw CompletionRequest.Invalid(field, $"{at}[{bad}] = {ids[bad]} is not a token id of this model (its vocabulary has {Tokenizer.VocabSize})");
        }

        return Tokenizer.Encode(text ?? string.Empty, addBos: true);
    }

    /// <summary>
    /// How <c>/v1/embeddings</c> pools the final hidden states (<c>kvaq serve --embeddings --pooling</c>), or null when the
    /// server computes no embeddings.
    /// </summary>
    public EmbeddingPooling? Pooling { get; init; }

    /// <summary>
    /// Generates for <paramref name="request"/> (the caller holds <see cref="Gate"/>): streams the text that is final to
    /// <paramref name="onText"/> (stop texts cut and held back by <see cref="StopTextFilter"/>); returns the result with the
    /// text returned to the client, the OpenAI finish reason (<c>stop</c> or <c>length</c>; <c>cancelled</c> when
    /// <paramref name="cancel"/> ended it) and the prompt tokens taken from the previous request's cache (the request's
    /// <c>cache_prompt</c>, when its prompt starts with all the tokens the cache holds).
    /// </summary>
    /// <remarks>
    /// With the request's log-probabilities, each piece comes with the entries of the tokens whose text begins in it
    /// (<paramref name="offset"/> is where the completion's text starts in OpenAI's <c>text_offset</c>: after the prompt), and
    /// the whole list with the result; a token cut off by a stop text is listed only when some of its text is returned.
    /// </remarks>
    public (GenerationResult Result, string Text, string FinishReason, int CachedTokens, List<ServedLogprob>? Logprobs) Generate(
        RequestGenerator slot, List<int> promptTokens, CompletionRequest request, Action<string, IReadOnlyList<ServedLogprob>>? onText, CancellationToken cancel)
    {
        var filter = new StopTextFilter(request.Stop);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        int maxTokens = request.MaxTokens ?? Ctx;

        // Completions count text offsets from the start of the prompt; echo returns the prompt first (its entries once it has run).
        string promptText = request.Messages is null ? request.Prompt ?? Tokenizer.Decode(promptTokens) : string.Empty;
        int offset = promptText.Length;
        var echoed = new List<ServedLogprob>();
        void Echo(IReadOnlyList<TokenLogprob>? scored)
        {
            if (request.Logprobs is not null)
            {
                echoed.AddRange(EchoEntries(request, promptTokens, scored));
            }

            if (promptText.Length > 0 || echoed.Count > 0)
            {
                onText?.Invoke(promptText, echoed);
            }
        }

        // Per generated token: its entry, and where its text starts and ends in the raw (uncut) text.
        var sampled = new List<TokenLogprob>();
        var spans = new List<(int Start, int End)>();
        var released = request.Logprobs is null ? null : new List<ServedLogprob>();
        int rawLength = 0;
        int previous = promptTokens[^1];
        var options = request.Logprobs is { } top
            ? new LogprobOptions(top) { Prompt = request.Echo, OnToken = sampled.Add, OnPrompt = request.Echo ? Echo : null }
            : null;
        if (request.Echo && options is null)
        {
            Echo(null);
        }

        // The entries of the tokens whose text starts before `emitted` (all of them with `all`) not yet handed out.
        List<ServedLogprob> Release(int emitted, bool all)
        {
            var now = new List<ServedLogprob>();
            while (released is not null && released.Count < spans.Count && (all || spans[released.Count].Start < emitted))
            {
                int i = released.Count;
                int prev = i == 0 ? previous : sampled[i - 1].Token;
                var entry = ServedLogprob.Of(Tokenizer, prev, sampled[i].Token, offset + spans[i].Start, sampled[i]);
                released.Add(entry);
                now.Add(entry);
            }

            return now;
        }

        var result = slot.Generate(
            promptTokens,
            maxTokens,
            request.CreateSampler(Tokenizer),
            piece =>
            {
                spans.Add((rawLength, rawLength + piece.Length));
                rawLength += piece.Length;
                string emit = filter.Push(piece);
                var entries = filter.Stopped ? [] : Release(filter.Text.Length, all: false);
                if (emit.Length > 0 || entries.Count > 0)
                {
                    onText?.Invoke(emit, entries);
                }

                if (filter.Stopped)
                {
                    stop.Cancel();
                }
            },
            EndOfTurn,
            stop.Token,
            reusePrefix: request.CachePrompt,
            logprobs: options);
        string tail = filter.Flush();
        var last = Release(filter.Text.Length, all: !filter.Stopped);
        if (tail.Length > 0 || last.Count > 0)
        {
            onText?.Invoke(tail, last);
        }

        if (filter.Stopped)
        {
            result = result with { StopReason = "stop_text" }; // the loop saw the cancellation the filter asked for
        }

        string finish = filter.Stopped ? "stop" : result.StopReason switch
        {
            "eos" or "grammar_dead_end" => "stop",
            "max_tokens" or "context_full" => "length",
            _ => "cancelled",
        };
        string text = request.Echo ? promptText + filter.Text : filter.Text;
        return (result, text, finish, slot.ReusedTokens, released is null ? null : [.. echoed, .. released]);
    }

    // An echoed prompt's entries: per prompt token (the BOS kvaq added left out) its text, offset and log-probability given
    // the tokens before it (none for a first token nothing precedes).
    private List<ServedLogprob> EchoEntries(CompletionRequest request, IReadOnlyList<int> promptTokens, IReadOnlyList<TokenLogprob>? scored)
    {
        int skip = request.PromptIds is null && promptTokens[0] == Tokenizer.BosToken ? 1 : 0;
        var entries = new List<ServedLogprob>();
        var decoder = new StreamingTextDecoder(Tokenizer, skip == 1 ? promptTokens[0] : -1);
        int offset = 0;
        for (int i = skip; i < promptTokens.Count; i++)
        {
            entries.Add(ServedLogprob.Of(Tokenizer, i == 0 ? -1 : promptTokens[i - 1], promptTokens[i], offset, i >= 1 ? scored?[i - 1] : null));
            offset += decoder.Push(promptTokens[i]).Length;
        }

        return entries;
    }

    /// <summary>
    /// The request's choices, <c>n</c> for each of its prompts (<see cref="CompletionRequest.Choices"/>, prompt by prompt;
    /// <paramref name="prompts"/> holds each prompt's tokens): <see cref="Generate"/> for each (choice i of a prompt sampled
    /// with the seed + i, a prompt kept in the cache where the next one can use it): on one slot one after another, on
    /// several (<c>--parallel</c>, the free slots the request took) choice i on slot i mod their count, the slots at once
    /// (their decode steps batched), so a choice gets the same tokens wherever it runs. Returns the choices in order up to
    /// the first that was cancelled (included) or never ran (a cancellation stops the others): fewer than asked, or a last
    /// one <c>cancelled</c>, when the request was cancelled (<see cref="Cancelled"/>). <paramref name="onStart"/>, <paramref name="onText"/> and
    /// <paramref name="onFinish"/> (not called for a cancelled choice) see each choice's index; with several slots they are
    /// called from their threads.
    /// </summary>
    public List<(GenerationResult Result, string Text, string FinishReason, int CachedTokens, List<ServedLogprob>? Logprobs)> GenerateChoices(
        IReadOnlyList<RequestGenerator> slots,
        IReadOnlyList<List<int>> prompts,
        CompletionRequest request,
        CancellationToken cancel,
        Action<int>? onStart = null,
        Action<int, string, IReadOnlyList<ServedLogprob>>? onText = null,
        Action<int, string>? onFinish = null)
    {
        int count = request.Choices;
        if (prompts.Count * request.N != count)
        {
            throw new ArgumentException($"{prompts.Count} prompts' tokens given for a request of {count / request.N}", nameof(prompts));
        }

        var runs = new (GenerationResult Result, string Text, string FinishReason, int CachedTokens, List<ServedLogprob>? Logprobs)?[count];
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        void Worker(int k)
        {
            for (int i = k; i < count; i += slots.Count)
            {
                if (i > 0 && stop.IsCancellationRequested)
                {
                    return; // choice 0 always runs (a cancelled run reports it)
                }

                int choice = i;
                onStart?.Invoke(choice);
                var r = Generate(slots[k], prompts[choice / request.N], request.ForTask(choice), onText is null ? null : (s, lp) => onText(choice, s, lp), stop.Token);
                Metrics?.Record(r.Result);
                runs[choice] = r;
                if (r.FinishReason == "cancelled")
                {
                    stop.Cancel();
                    return;
                }

                onFinish?.Invoke(choice, r.FinishReason);
            }
        }

        int workers = Math.Min(slots.Count, count);
        var others = Enumerable.Range(1, workers - 1)
            .Select(k => Task.Factory.StartNew(() => Worker(k), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default))
            .ToArray();
        try
        {
            Worker(0);
        }
        catch
        {
            stop.Cancel(); // the other slots' choices stop too
            throw;
        }
        finally
        {
            if (others.Length > 0)
            {
                Task.WhenAll(others).GetAwaiter().GetResult();
            }
        }

        var done = new List<(GenerationResult Result, string Text, string FinishReason, int CachedTokens, List<ServedLogprob>? Logprobs)>();
        foreach (var r in runs)
        {
            if (r is not { } run)
            {
                break;
            }

            done.Add(run);
            if (run.FinishReason == "cancelled")
            {
                break;
            }
        }

        return done;
    }

    /// <summary>Whether <see cref="GenerateChoices"/>'s <paramref name="runs"/> for <paramref name="n"/> choices (all prompts') were cancelled.</summary>
    public static bool Cancelled<T>(IReadOnlyList<(GenerationResult Result, string Text, string FinishReason, int CachedTokens, T Logprobs)> runs, int n) =>
        runs.Count < n || runs[^1].FinishReason == "cancelled";

    /// <summary>
    /// Takes a free slot for <paramref name="promptTokens"/> (<see cref="Take"/>; the caller holds <see cref="Gate"/>) and,
    /// for a request of <paramref name="choices"/> choices, as many more as are free right now, up to one per choice (their
    /// gate entries taken too); give each back with <see cref="Release"/>.
    /// </summary>
    public List<RequestGenerator> TakeForChoices(IReadOnlyList<int> promptTokens, int choices)
    {
        var slots = new List<RequestGenerator> { Take(promptTokens) };
        while (slots.Count < choices && Gate.Wait(0))
        {
            slots.Add(Take(promptTokens));
        }

        return slots;
    }

    /// <summary>
    /// Runs BOS and one greedy token, as llama-server's warm-up does: the kernels are compiled before the first request (kvaq
    /// runs without tiered compilation, so a first call compiles at full optimization).
    /// </summary>
    public void WarmUp()
    {
        var bos = Tokenizer.Encode(string.Empty, addBos: true);
        if (bos.Count > 0)
        {
            var slot = _free[0];
            slot.Generate(bos, 1, new Sampler(), null);
        }
    }

    public void Dispose() => Gate.Dispose();
}
