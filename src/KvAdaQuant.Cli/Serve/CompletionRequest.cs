using System.Globalization;
using System.Text.Json;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// The fields of a <c>/v1/completions</c> or <c>/v1/chat/completions</c> body that kvaq uses, checked: each wrong one is a
/// <see cref="ServeRequestException"/> naming the field and the value. Fields kvaq does not use are ignored, as
/// llama-server does.
/// </summary>
internal sealed partial record CompletionRequest(
    string? Prompt,
    IReadOnlyList<ChatMessage>? Messages,
    int? MaxTokens,
    float Temperature,
    int TopK,
    float TopP,
    ulong Seed,
    IReadOnlyList<string> Stop,
    bool Stream,
    bool CachePrompt = true)
{
    /// <summary>min_p (llama-server's name; 0 = off).</summary>
    public float MinP { get; init; }

    /// <summary>repeat_penalty (llama-server's name; 1 = off).</summary>
    public float RepeatPenalty { get; init; } = 1f;

    /// <summary>repeat_last_n (llama-server's name; -1 = all, 0 = off).</summary>
    public int RepeatLastN { get; init; } = 64;

    /// <summary>presence_penalty (OpenAI's name; 0 = off).</summary>
    public float PresencePenalty { get; init; }

    /// <summary>frequency_penalty (OpenAI's name; 0 = off).</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>
    /// The most likely tokens to list per position when log-probabilities are asked for (completions: <c>logprobs</c>, an
    /// integer; chat: <c>top_logprobs</c> with <c>logprobs: true</c>), or null for none.
    /// </summary>
    public int? Logprobs { get; init; }

    /// <summary>completions' <c>echo</c>: the prompt is returned before the completion (with its log-probabilities when asked).</summary>
    public bool Echo { get; init; }

    /// <summary>logit_bias: token id → bias added to its logit before sampling (OpenAI's; <c>false</c> bans the token, as llama-server).</summary>
    public IReadOnlyDictionary<int, float> LogitBias { get; init; } = new Dictionary<int, float>();

    /// <summary>Most choices a request may ask for (<c>n</c>; OpenAI's limit).</summary>
    public const int MaxChoices = 128;

    /// <summary><c>n</c>: choices to generate, one after another over the same prompt (1..<see cref="MaxChoices"/>).</summary>
    public int N { get; init; } = 1;

    /// <summary>A completions prompt given as token ids (used as they are, no BOS added, as llama-server does), or null.</summary>
    public IReadOnlyList<int>? PromptIds { get; init; }

    /// <summary>
    /// The sampler the request asks for (with <paramref name="grammar"/>, a grammar state of its own, or none); DRY's
    /// sequence breakers are matched on the token texts of <paramref name="tokenizer"/> (without one, DRY has none).
    /// </summary>
    public Sampler CreateSampler(Grammar.GrammarConstraint? grammar = null, Tokenization.ITokenizer? tokenizer = null) => new(Temperature, TopK, TopP, Seed)
    {
        Grammar = grammar,
        TypicalP = TypicalP,
        Mirostat = Mirostat,
        MirostatTau = MirostatTau,
        MirostatEta = MirostatEta,
        XtcProbability = XtcProbability,
        XtcThreshold = XtcThreshold,
        DryMultiplier = DryMultiplier,
        DryBase = DryBase,
        DryAllowedLength = DryAllowedLength,
        DryPenaltyLastN = DryPenaltyLastN,
        DrySequenceBreakers = Engine.DrySequenceBreakers.ForSampler(tokenizer, DrySequenceBreakers, DryMultiplier, DryPenaltyLastN),
        TopNSigma = TopNSigma,
        MinP = MinP,
        RepeatPenalty = RepeatPenalty,
        RepeatLastN = RepeatLastN,
        PresencePenalty = PresencePenalty,
        FrequencyPenalty = FrequencyPenalty,
        LogitBias = LogitBias,
    };

    /// <summary>Reads a <c>/v1/completions</c> body (<paramref name="chat"/> false) or a chat one; absent sampling fields take <paramref name="defaults"/>.</summary>
    public static CompletionRequest Parse(JsonElement body, bool chat, CompletionRequest defaults)
    {
        string? prompt = null;
        List<int>? promptIds = null;
        List<(string? Text, List<int>? Ids)>? prompts = null;
        List<ChatMessage>? messages = null;
        bool echo = false;
        int? logprobs;
        if (chat)
        {
            messages = ParseMessages(body);
            logprobs = ChatLogprobs(body);
        }
        else
        {
            prompts = ParsePrompt(body);
            (prompt, promptIds) = prompts[0];
            echo = Flag(body, "echo", absent: false);
            logprobs = Field(body, "logprobs") is { } lp ? Top(lp, "logprobs") : null;
        }

        int? maxTokens = defaults.MaxTokens;
        foreach (var name in chat ? new[] { "max_tokens", "max_completion_tokens" } : ["max_tokens"])
        {
            if (Field(body, name) is { } m)
            {
                // 0 only with echo: the prompt scored, nothing generated (OpenAI's and lm-evaluation-harness's use).
                int least = echo ? 0 : 1;
                maxTokens = Integer(m, name) is var mt && mt >= least && mt <= int.MaxValue
                    ? (int)mt
                    : throw Invalid(name, $"{name} must be an integer >= {least}{(echo || chat ? string.Empty : " (0 only with echo)")}, got {Raw(m)}");
            }
        }

        float temperature = Field(body, "temperature") is { } t ? Number(t, "temperature") : defaults.Temperature;
        if (!(temperature >= 0 && float.IsFinite(temperature)))
        {
            throw Invalid("temperature", $"temperature must be a finite number >= 0, got {Raw(Field(body, "temperature")!.Value)}");
        }

        float topP = Field(body, "top_p") is { } tp ? Number(tp, "top_p") : defaults.TopP;
        if (!(topP > 0 && topP <= 1))
        {
            throw Invalid("top_p", $"top_p must be in (0, 1], got {Raw(Field(body, "top_p")!.Value)}");
        }

        int topK = defaults.TopK;
        if (Field(body, "top_k") is { } tk)
        {
            long k = Integer(tk, "top_k");
            topK = k is >= 0 and <= int.MaxValue ? (int)k : throw Invalid("top_k", $"top_k must be an integer >= 0 (0 = all tokens), got {Raw(tk)}");
        }

        ulong seed = defaults.Seed;
        if (Field(body, "seed") is { } s)
        {
            seed = s.ValueKind == JsonValueKind.Number && s.TryGetUInt64(out ulong u) ? u : throw Invalid("seed", $"seed must be an integer >= 0, got {Raw(s)}");
        }

        var (grammar, grammarField) = ParseConstraint(body);
        var (tools, toolChoice, parallelToolCalls) = chat ? ParseTools(body) : (null, ChatToolChoice.Auto, false);
        if (!chat)
        {
            RefuseTools(body);
        }
        else if (tools is { Count: > 0 } && toolChoice.Mode != ChatToolMode.None && grammar is not null)
        {
            throw Invalid(grammarField!, $"tools and {grammarField} both constrain the output; give one of them (or tool_choice \"none\")");
        }

        int n = 1;
        if (Field(body, "n") is { } choices)
        {
            n = choices.ValueKind == JsonValueKind.Number && choices.TryGetInt32(out int count) && count is >= 1 and <= MaxChoices
                ? count
                : throw Invalid("n", $"n must be an integer in 1..{MaxChoices} (choices generated one after another), got {Raw(choices)}");
        }

        float minP = Field(body, "min_p") is { } mp ? Number(mp, "min_p") : defaults.MinP;
        if (!(minP is >= 0f and <= 1f))
        {
            throw Invalid("min_p", $"min_p must be in [0, 1], got {Raw(Field(body, "min_p")!.Value)}");
        }

        float repeatPenalty = Field(body, "repeat_penalty") is { } rp ? Number(rp, "repeat_penalty") : defaults.RepeatPenalty;
        if (!(repeatPenalty > 0f && float.IsFinite(repeatPenalty)))
        {
            throw Invalid("repeat_penalty", $"repeat_penalty must be a finite number > 0 (1 = off), got {Raw(Field(body, "repeat_penalty")!.Value)}");
        }

        int repeatLastN = defaults.RepeatLastN;
        if (Field(body, "repeat_last_n") is { } rl)
        {
            long v = Integer(rl, "repeat_last_n");
            repeatLastN = v is >= -1 and <= int.MaxValue ? (int)v : throw Invalid("repeat_last_n", $"repeat_last_n must be an integer >= -1 (-1 = the whole sequence, 0 = off), got {Raw(rl)}");
        }

        float Penalty(string name, float fallback) => Field(body, name) is { } e
            ? Number(e, name) is var v && float.IsFinite(v) ? v : throw Invalid(name, $"{name} must be a finite number, got {Raw(e)}")
            : fallback;

        return WithSamplers(body, defaults, new CompletionRequest(
            prompt, messages, maxTokens, temperature, topK, topP, seed, ParseStop(body), Flag(body, "stream", absent: false), Flag(body, "cache_prompt", absent: true))
        {
            MinP = minP,
            RepeatPenalty = repeatPenalty,
            RepeatLastN = repeatLastN,
            PresencePenalty = Penalty("presence_penalty", defaults.PresencePenalty),
            FrequencyPenalty = Penalty("frequency_penalty", defaults.FrequencyPenalty),
            Logprobs = logprobs,
            Echo = echo,
            PromptIds = promptIds,
            Prompts = prompts is { Count: > 1 } ? [.. prompts.Select(x => (x.Text, (IReadOnlyList<int>?)x.Ids))] : null,
            N = n,
            LogitBias = Field(body, "logit_bias") is { } lb ? ParseLogitBias(lb) : defaults.LogitBias,
            // A request without a constraint of its own takes the server's (serve --grammar, --json-schema, ...; llama-server's).
            Grammar = grammar ?? defaults.Grammar,
            GrammarField = grammar is null ? defaults.GrammarField : grammarField,
            ParsedGrammar = grammar is null ? defaults.ParsedGrammar : ParseGrammar(grammar, grammarField),
            Tools = tools,
            ToolChoice = toolChoice,
            ParallelToolCalls = parallelToolCalls,
        });
    }

    // Completions have no tools: a request offering some is refused rather than answered without them (an empty list is no tools).
    private static void RefuseTools(JsonElement body)
    {
        if (Field(body, "tools") is { } e && !(e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 0))
        {
            throw Invalid("tools", "tools is for /v1/chat/completions; a completion of a prompt calls no tools");
        }
    }

    /// <summary>
    /// Reads a body of llama-server's own <c>/completion</c>: the completions fields (<see cref="Parse"/>), with
    /// <c>n_predict</c> for <c>max_tokens</c> (-1: until EOS or the context is full; 0: the prompt run into the slot's cache,
    /// nothing generated, as llama-server) and <c>id_slot</c> (-1 or absent: the
    /// free slot whose cache shares most of the prompt; else that slot, waited for) among <paramref name="slots"/>.
    /// One completion of the prompt, without the OpenAI extras: <c>echo</c>, <c>logprobs</c> and <c>n</c> are not used;
    /// <c>n_probs</c> above 0 is refused (<c>/v1/completions</c>' <c>logprobs</c> lists the likeliest tokens).
    /// </summary>
    public static (CompletionRequest Request, int Slot) ParseNative(JsonElement body, CompletionRequest defaults, int slots)
    {
        var request = Parse(body, chat: false, defaults) with { N = 1, Echo = false, Logprobs = null };
        if (request.Prompts is { } batch)
        {
            throw Invalid("prompt", $"prompt holds {batch.Count} prompts; /completion takes one (/v1/completions takes a batch)");
        }

        if (Field(body, "n_predict") is { } np)
        {
            long v = Integer(np, "n_predict");
            request = v switch
            {
                -1 => request with { MaxTokens = null },
                >= 0 and <= int.MaxValue => request with { MaxTokens = (int)v },
                _ => throw Invalid("n_predict", $"n_predict must be -1 (until EOS or the context is full) or an integer >= 0 (0: the prompt only, into the slot's cache), got {Raw(np)}"),
            };
        }

        if (Field(body, "n_probs") is { } probs && Integer(probs, "n_probs") != 0)
        {
            throw Invalid("n_probs", "n_probs is not supported on /completion; /v1/completions lists the likeliest tokens (\"logprobs\": N)");
        }

        int slot = -1;
        if (Field(body, "id_slot") is { } id)
        {
            long v = Integer(id, "id_slot");
            slot = v >= -1 && v < slots ? (int)v : throw Invalid("id_slot", $"id_slot must be -1 (any free slot) or a slot of this server, 0 to {slots - 1} (kvaq serve --parallel), got {Raw(id)}");
        }

        return (request, slot);
    }

    // logit_bias as OpenAI writes it, {"token id": bias}, or llama-server's [[id, bias], ...]; a bias of false bans the token.
    private static Dictionary<int, float> ParseLogitBias(JsonElement e)
    {
        var biases = new Dictionary<int, float>();
        void Add(string at, JsonElement id, JsonElement bias, string? key = null)
        {
            int token = key is not null
                ? int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int k) ? k : throw Invalid("logit_bias", $"logit_bias: key \"{key}\" is not a token id")
                : id.ValueKind == JsonValueKind.Number && id.TryGetInt32(out int i) && i >= 0 ? i : throw Invalid("logit_bias", $"{at}[0] must be a token id (an integer >= 0), got {Raw(id)}");
            float value = bias.ValueKind switch
            {
                JsonValueKind.False => float.NegativeInfinity,
                JsonValueKind.Number when bias.TryGetDouble(out double d) && float.IsFinite((float)d) => (float)d,
                _ => throw Invalid("logit_bias", $"{at}: the bias must be a finite number (within float's range, +-3.4e38) or false (ban), got {Raw(bias)}"),
            };
            float sum = biases.GetValueOrDefault(token) + value;
            biases[token] = float.IsPositiveInfinity(sum) || float.IsNaN(sum)
                ? throw Invalid("logit_bias", $"{at}: token {token}'s biases add up beyond float's range")
                : sum;
        }

        if (e.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in e.EnumerateObject())
            {
                Add($"logit_bias[\"{p.Name}\"]", default, p.Value, p.Name);
            }
        }
        else if (e.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var pair in e.EnumerateArray())
            {
                if (pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2)
                {
                    throw Invalid("logit_bias", $"logit_bias[{i}] must be a pair [token id, bias], got {Raw(pair)}");
                }

                Add($"logit_bias[{i}]", pair[0], pair[1]);
                i++;
            }
        }
        else
        {
            throw Invalid("logit_bias", $"logit_bias must be an object of token id -> bias, got {Raw(e)}");
        }

        return biases;
    }

    /// <summary>The request as choice <paramref name="index"/> of <see cref="N"/> runs it: the seed plus the index (choice 0 is the request with n 1).</summary>
    public CompletionRequest ForChoice(int index) => index == 0 ? this : this with { Seed = unchecked(Seed + (ulong)index) };

    /// <summary>Most prompts one completions request may hold (<see cref="Prompts"/>).</summary>
    public const int MaxPrompts = 2048;

    /// <summary>
    /// A completions request's prompts when it holds several (OpenAI's batch: <c>prompt</c> an array of strings or of
    /// token-id arrays), each a text (BOS added) or token ids (used as given); null for one prompt (<see cref="Prompt"/>
    /// or <see cref="PromptIds"/>, which then hold the first of a batch too).
    /// </summary>
    public IReadOnlyList<(string? Text, IReadOnlyList<int>? Ids)>? Prompts { get; init; }

    /// <summary>Completions the request runs: <see cref="N"/> for each prompt, in OpenAI's order (prompt by prompt).</summary>
    public int Choices => (Prompts?.Count ?? 1) * N;

    /// <summary>
    /// The request as completion <paramref name="index"/> (of <see cref="Choices"/>) runs it: prompt
    /// <paramref name="index"/> / <see cref="N"/> alone, as choice <paramref name="index"/> mod <see cref="N"/>
    /// (<see cref="ForChoice"/>).
    /// </summary>
    public CompletionRequest ForTask(int index) =>
        (Prompts is { } prompts ? this with { Prompt = prompts[index / N].Text, PromptIds = prompts[index / N].Ids, Prompts = null } : this).ForChoice(index % N);

    // A completions prompt: a string, token ids, or an array of strings or of token-id arrays (a batch; one is one prompt).
    private static List<(string? Text, List<int>? Ids)> ParsePrompt(JsonElement body) => ParseInputs(body, "prompt");

    /// <summary>
    /// The texts or token-id lists of field <paramref name="name"/> (completions' <c>prompt</c>, embeddings' <c>input</c>):
    /// a string, token ids, or an array of strings or of token-id arrays (a batch of at most <see cref="MaxPrompts"/>).
    /// </summary>
    internal static List<(string? Text, List<int>? Ids)> ParseInputs(JsonElement body, string name)
    {
        if (Field(body, name) is not { } p)
        {
            throw Invalid(name, $"{name} is required (a string, or an array of token ids)");
        }

        if (p.ValueKind == JsonValueKind.String)
        {
            return [(p.GetString()!, null)];
        }

        if (p.ValueKind != JsonValueKind.Array)
        {
            throw Invalid(name, $"{name} must be a string or an array of token ids, got {Kind(p)}");
        }

        var items = p.EnumerateArray().ToList();
        if (items.Count == 0 || items[0].ValueKind is not (JsonValueKind.String or JsonValueKind.Array))
        {
            return [(null, Ids(p, name, name))];
        }

        // A batch: ["text", ...] or [[ids], ...] (either kind in each place).
        if (items.Count > MaxPrompts)
        {
            throw Invalid(name, $"{name} holds {items.Count} {(name == "prompt" ? "prompts" : "inputs")}; a request may hold at most {MaxPrompts}");
        }

        return [.. items.Select((e, i) => e.ValueKind switch
        {
            JsonValueKind.String => (e.GetString(), (List<int>?)null),
            JsonValueKind.Array => (null, Ids(e, name, $"{name}[{i}]")),
            _ => throw Invalid(name, $"{name}[{i}] must be a string or an array of token ids, got {Raw(e)}"),
        })];
    }

    private static List<int> Ids(JsonElement array, string name, string at)
    {
        var ids = new List<int>();
        int i = 0;
        foreach (var e in array.EnumerateArray())
        {
            ids.Add(e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0 ? id : throw Invalid(name, $"{at}[{i}] must be a token id (an integer >= 0), got {Raw(e)}"));
            i++;
        }

        return ids.Count > 0 ? ids : throw Invalid(name, $"{at} is an empty array of token ids");
    }

    // Chat: logprobs (true/false) and top_logprobs (0..20, only with logprobs true), as OpenAI takes them.
    private static int? ChatLogprobs(JsonElement body)
    {
        bool on = Flag(body, "logprobs", absent: false);
        if (Field(body, "top_logprobs") is not { } top)
        {
            return on ? 0 : null;
        }

        return on ? Top(top, "top_logprobs") : throw Invalid("top_logprobs", "top_logprobs needs \"logprobs\": true");
    }

    private static int Top(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int n) && n is >= 0 and <= LogprobOptions.MaxTop
            ? n
            : throw Invalid(name, $"{name} must be an integer in 0..{LogprobOptions.MaxTop} (the most likely tokens listed per position), got {Raw(e)}");

    private static List<string> ParseStop(JsonElement body)
    {
        if (Field(body, "stop") is not { } stop)
        {
            return [];
        }

        var texts = new List<string>();
        if (stop.ValueKind == JsonValueKind.String)
        {
            texts.Add(stop.GetString()!);
        }
        else if (stop.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var e in stop.EnumerateArray())
            {
                texts.Add(e.ValueKind == JsonValueKind.String ? e.GetString()! : throw Invalid("stop", $"stop[{i}] must be a string, got {Raw(e)}"));
                i++;
            }
        }
        else
        {
            throw Invalid("stop", $"stop must be a string or an array of strings, got {Raw(stop)}");
        }

        int empty = texts.FindIndex(string.IsNullOrEmpty);
        return empty < 0 ? texts : throw Invalid("stop", stop.ValueKind == JsonValueKind.String ? "stop: an empty text would end every reply at once" : $"stop[{empty}]: an empty text would end every reply at once");
    }

    internal static List<ChatMessage> ParseMessages(JsonElement body)
    {
        if (Field(body, "messages") is not { ValueKind: JsonValueKind.Array } array)
        {
            throw Invalid("messages", Field(body, "messages") is { } m ? $"messages must be an array of messages, got {Raw(m)}" : "messages is required (an array of {\"role\", \"content\"} objects)");
        }

        var messages = new List<ChatMessage>();
        int i = 0;
        foreach (var e in array.EnumerateArray())
        {
            string at = $"messages[{i}]";
            if (e.ValueKind != JsonValueKind.Object)
            {
                throw Invalid("messages", $"{at} must be an object with role and content, got {Raw(e)}");
            }

            string role = Field(e, "role") is { ValueKind: JsonValueKind.String } r ? r.GetString()! : throw Invalid("messages", $"{at}.role is required (system, user, assistant or tool)");
            switch (role)
            {
                case "system" or "user":
                    messages.Add(new ChatMessage(role, Content(Field(e, "content"), at)));
                    break;
                case "assistant":
                    // A reply that called tools: its calls, and content that may be null.
                    var calls = Field(e, "tool_calls") is { } tc ? ParseToolCalls(tc, at) : null;
                    string content = calls is { Count: > 0 } && Field(e, "content") is null ? string.Empty : Content(Field(e, "content"), at);
                    messages.Add(new ChatMessage(role, content) { ToolCalls = calls is { Count: > 0 } ? calls : null });
                    break;
                case "tool":
                    string callId = Field(e, "tool_call_id") switch
                    {
                        { ValueKind: JsonValueKind.String } id => id.GetString()!,
                        null => throw Invalid("messages", $"{at}.tool_call_id is required (the id of the call this result answers)"),
                        { } other => throw Invalid("messages", $"{at}.tool_call_id must be a string, got {Raw(other)}"),
                    };
                    string? name = Field(e, "name") is { ValueKind: JsonValueKind.String } n ? n.GetString() : null;
                    messages.Add(new ChatMessage(role, Content(Field(e, "content"), at)) { ToolCallId = callId, Name = name });
                    break;
                default:
                    throw Invalid("messages", $"{at}.role: unknown role '{role}'; expected system, user, assistant or tool");
            }

            i++;
        }

        return messages.Count > 0 ? messages : throw Invalid("messages", "messages is empty; a chat completion needs at least one message");
    }

    // A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined), as OpenAI clients send.
    private static string Content(JsonElement? content, string at)
    {
        switch (content)
        {
            case { ValueKind: JsonValueKind.String } s:
                return s.GetString()!;
            case { ValueKind: JsonValueKind.Array } parts:
                var text = new System.Text.StringBuilder();
                int j = 0;
                foreach (var part in parts.EnumerateArray())
                {
                    if (part.ValueKind != JsonValueKind.Object || Field(part, "type") is not { ValueKind: JsonValueKind.String } type || type.GetString() != "text"
                        || Field(part, "text") is not { ValueKind: JsonValueKind.String } partText)
                    {
                        throw Invalid("messages", $"{at}.content[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported, got {Raw(part)}");
                    }

                    text.Append(partText.GetString());
                    j++;
                }

                return text.ToString();
            case null:
                throw Invalid("messages", $"{at}.content is required (a string)");
            default:
                throw Invalid("messages", $"{at}.content must be a string, got {Raw(content.Value)}");
        }
    }

    /// <summary>A boolean field, <paramref name="absent"/> when it is missing or null.</summary>
    internal static bool Flag(JsonElement body, string name, bool absent) => Field(body, name) switch
    {
        null => absent,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        { } e => throw Invalid(name, $"{name} must be true or false, got {Raw(e)}"),
    };

    // A field that is present and not null.
    internal static JsonElement? Field(JsonElement body, string name) =>
        body.TryGetProperty(name, out var e) && e.ValueKind != JsonValueKind.Null ? e : null;

    private static float Number(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double d) ? (float)d : throw Invalid(name, $"{name} must be a number, got {Raw(e)}");

    internal static long Integer(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long v) ? v : throw Invalid(name, $"{name} must be an integer, got {Raw(e)}");

    internal static ServeRequestException Invalid(string param, string message) => new(400, message, param);

    // The value as the client wrote it (shortened), for error messages.
    internal static string Raw(JsonElement e)
    {
        string text = e.ValueKind == JsonValueKind.String ? $"\"{e.GetString()}\"" : e.GetRawText();
        return text.Length <= 60 ? text : string.Concat(text.AsSpan(0, 57), "...");
    }

    private static string Kind(JsonElement e) => e.ValueKind.ToString().ToLower(CultureInfo.InvariantCulture) switch
    {
        "true" or "false" => "a boolean",
        "object" => "an object",
        "array" => "an array",
        "number" => $"the number {e.GetRawText()}",
        var k => k,
    };
}
