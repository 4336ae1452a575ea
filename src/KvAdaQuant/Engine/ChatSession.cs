using System.Runtime.InteropServices;
using System.Text.Json;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// A conversation over one <see cref="IDecodeSession"/> (the CPU engine's <see cref="InferenceSession"/>, or the GPU's
/// <c>CudaDecodeSession</c>) whose cache is kept from turn to turn: each reply feeds only the new text (the user's message
/// in the template, after what the cache already holds) and decodes from there, as llama.cpp's conversation mode does;
/// nothing is computed twice. The tokens in the cache are <see cref="Tokens"/>. Sampling runs on the host.
/// </summary>
public sealed class ChatSession
{
    private readonly IDecodeSession _session;
    private readonly InferenceSession? _cpu;
    private readonly ITokenizer _tokenizer;
    private readonly List<ChatMessage> _messages = [];
    private readonly List<int> _tokens = [];
    private readonly string? _system;
    private readonly int _endOfTurn;
    private string _fedText = string.Empty;

    /// <summary>
    /// Starts a conversation on the CPU engine (<see cref="Save"/> and <see cref="Load"/> work). Every control token
    /// <paramref name="template"/> writes must be one token of <paramref name="tokenizer"/>, or an
    /// <see cref="ArgumentException"/> names the first that is not. The session's cache is cleared.
    /// </summary>
    public ChatSession(InferenceSession session, ITokenizer tokenizer, ChatTemplate template, string? systemPrompt = null)
        : this((IDecodeSession)session, tokenizer, template, systemPrompt)
    {
    }

    /// <summary>
    /// Starts a conversation on any <see cref="IDecodeSession"/> (e.g. the GPU's <c>CudaDecodeSession</c>); state files
    /// (<see cref="Save"/>, <see cref="Load"/>) need a CPU <see cref="InferenceSession"/> and are refused on any other.
    /// Every control token <paramref name="template"/> writes must be one token of <paramref name="tokenizer"/>, or an
    /// <see cref="ArgumentException"/> names the first that is not. The session's cache is cleared.
    /// </summary>
    public ChatSession(IDecodeSession session, ITokenizer tokenizer, ChatTemplate template, string? systemPrompt = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        _session = session;
        _cpu = session as InferenceSession;
        _tokenizer = tokenizer;
        Template = template;
        _system = string.IsNullOrEmpty(systemPrompt) ? null : systemPrompt;
        _endOfTurn = template.EndOfTurnToken(tokenizer);
        Reset();
    }

    /// <summary>The template.</summary>
    public ChatTemplate Template { get; }

    /// <summary>The conversation so far (the system message first, if any).</summary>
    public IReadOnlyList<ChatMessage> Messages => _messages;

    /// <summary>The tokens the cache holds, in order (<c>Tokens.Count == Position</c>).</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>Positions used.</summary>
    public int Position => _session.Position;

    /// <summary>Positions the cache holds in all.</summary>
    public int Capacity => _session.Capacity;

    /// <summary>
    /// What to do when a turn and its reply (<c>maxTokens</c>) do not fit in the positions left: false (the default)
    /// refuses a turn whose text does not fit and lets a reply stop at the full context; true drops the oldest messages
    /// after the system message, whole user/assistant exchanges, until the rest of the conversation, the new message and
    /// the reply (<c>maxTokens</c>, at most half the context) fit, clears the cache and feeds the kept conversation again (llama.cpp's context shift, by
    /// recomputation: keys in a quantized cache are stored after RoPE, so moving them would mean dequantizing, rotating and
    /// quantizing them again; recomputing gives exactly the cache a fresh conversation over the kept messages has).
    /// </summary>
    public bool ContextShift { get; init; }

    /// <summary>Speculative decoding for every reply (<see cref="Generator.Speculative"/>), or null (the default).</summary>
    public Speculative.SpeculativeDecoding? Speculative { get; init; }

    /// <summary>What the last <see cref="Reply"/> dropped to fit, or null when it did not shift.</summary>
    public ContextShiftInfo? LastShift { get; private set; }

    /// <summary>Whether <see cref="Save"/> and <see cref="Load"/> work: the cache is a CPU <see cref="InferenceSession"/>'s.</summary>
    public bool SupportsStateFiles => _cpu is not null;

    /// <summary>Forgets the conversation (the system prompt stays) and clears the cache.</summary>
    public void Reset()
    {
        _session.Reset();
        _messages.Clear();
        _tokens.Clear();
        _fedText = string.Empty;
        if (_system is not null)
        {
            _messages.Add(new ChatMessage("system", _system));
        }
    }

    /// <summary>
    /// Adds <paramref name="userMessage"/> and generates the reply, streaming it to <paramref name="onText"/>: up to
    /// <paramref name="maxTokens"/> tokens, stopping at EOS or the template's end of turn, when the context is full, once
    /// the reply's text ends with one of <paramref name="stopTexts"/> (stop reason <c>stop_text</c>), or when
    /// <paramref name="cancel"/> is signalled (after the token being streamed, stop reason <c>cancelled</c>; the reply is
    /// kept as far as it went). An empty message with the <c>none</c> template adds no text: the reply continues the
    /// previous one. A turn
    /// whose text does not fit in the positions left is refused with an <see cref="ArgumentException"/> before anything
    /// runs (the conversation is unchanged; <see cref="Reset"/> starts over). A reply that fails midway (the cache refusing
    /// a non-finite value, <paramref name="onText"/> throwing) resets the conversation, since the cache cannot drop the
    /// positions it took, and the exception goes on.
    /// </summary>
    public GenerationResult Reply(
        string userMessage,
        int maxTokens,
        Sampler sampler,
        Action<string>? onText = null,
        CancellationToken cancel = default,
        IReadOnlyList<string>? stopTexts = null,
        LogprobOptions? logprobs = null)
    {
        if (logprobs is { Prompt: true })
        {
            throw new ArgumentException("a chat reply records the log-probabilities of its generated tokens only (LogprobOptions.Prompt is for a whole prompt run from an empty cache)", nameof(logprobs));
        }

        LastShift = null;
        var messages = _messages.Append(new ChatMessage("user", userMessage)).ToList();
        string render = Template.Render(messages, addGenerationPrompt: true);
        if (ContextShift && Shift(messages, maxTokens) is { } shifted)
        {
            (messages, render) = shifted;
        }

        // The new text: what the rendering adds after the text the cache holds; where the template rewrote the past
        // (it never does for the built-in ones), after the rendering of the past conversation, as llama.cpp's chat does.
        string turn = render.StartsWith(_fedText, StringComparison.Ordinal) ? render[_fedText.Length..] : AfterThePast(render);
        var turnTokens = _tokenizer.Encode(turn, addBos: Position == 0, parseSpecial: Template != ChatTemplate.None);

        if (turnTokens.Count == 0 && Position == 0)
        {
            throw new ArgumentException("the message is empty and there is no earlier reply to continue");
        }

        if (Position + turnTokens.Count > Capacity)
        {
            throw new ArgumentException($"this turn needs {turnTokens.Count} tokens but {Capacity - Position} of the context's {Capacity} positions are left (--ctx; reset the conversation to start over)");
        }

        GenerationResult result;
        try
        {
            // An empty turn (the none template's empty message) feeds nothing and goes on from the logits of the last
            // position; the last token fed stands in as the prompt for the text decoder.
            result = turnTokens.Count > 0
                ? Run(turnTokens, feed: true, maxTokens, sampler, onText, cancel, stopTexts, logprobs)
                : Run([_tokens[^1]], feed: false, maxTokens, sampler, onText, cancel, stopTexts, logprobs) with { PromptTokens = [], PrefillTokensPerSecond = 0, PrefillTokens = 0, PrefillSeconds = 0 };
            string fed = turn + result.Text;

            // The loop leaves the last token it printed unfed when it stops at the token limit, and never feeds the end of
            // turn it stopped at: feed them now, so that the cache holds the conversation as the template writes it (a full
            // context stays full: every later turn is refused).
            if (result.StopReason is "max_tokens" or "cancelled" or "stop_text" && result.Tokens.Count > 0 && Position < Capacity)
            {
                Feed(result.Tokens[^1]);
            }
            else if (result.StopReason == "eos" && _endOfTurn >= 0 && Position < Capacity)
            {
                Feed(_endOfTurn);
                fed += Template.EndOfTurn;
            }

            _fedText += fed;
        }
        catch
        {
            // The cache already holds part of the turn and cannot drop positions: only an empty conversation is consistent.
            Reset();
            throw;
        }

        messages.Add(new ChatMessage("assistant", result.Text));
        _messages.Clear();
        _messages.AddRange(messages);
        return result;
    }

    /// <summary>
    /// Saves the conversation to <paramref name="path"/> (atomically): the cache, its tokens and the last logits as a
    /// <see cref="SessionStateFile"/>, with the template, the messages and the text fed as its application data (JSON).
    /// Returns the file's size. On a session other than a CPU <see cref="InferenceSession"/> (the GPU's) a
    /// <see cref="NotSupportedException"/> says so and nothing is written.
    /// </summary>
    public long Save(string path)
    {
        var cpu = CpuSession();
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("format", ChatStateFormat);
            w.WriteString("template", Template.Name);
            w.WriteString("fed_text", _fedText);
            w.WriteStartArray("messages");
            foreach (var m in _messages)
            {
                w.WriteStartObject();
                w.WriteString("role", m.Role);
                w.WriteString("content", m.Content);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return SessionStateFile.SaveFile(path, cpu, _tokens, System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
    }

    /// <summary>
    /// Replaces the conversation by the one <see cref="Save"/> wrote to <paramref name="path"/>. A file of another model,
    /// KV plan or chat template, one that holds no conversation (a <c>kvaq generate --prompt-cache</c> file) or a damaged
    /// one is refused with the conversation unchanged; so is any file on a session other than a CPU
    /// <see cref="InferenceSession"/> (a <see cref="NotSupportedException"/>, the file not read).
    /// </summary>
    public SessionState Load(string path)
    {
        var cpu = CpuSession();
        List<ChatMessage>? messages = null;
        string fed = string.Empty;
        try
        {
            var state = SessionStateFile.LoadFile(path, cpu, data => (fed, messages) = ReadChatState(data, path));
            _tokens.Clear();
            _tokens.AddRange(state.Tokens);
            _messages.Clear();
            _messages.AddRange(messages!);
            _fedText = fed;
            return state;
        }
        catch
        {
            // Refusals come before the cache is touched; only a read failing midway leaves it (emptied) out of step.
            if (_session.Position != _tokens.Count)
            {
                Reset();
            }

            throw;
        }
    }

    private const string ChatStateFormat = "kvaq-chat-1";

    private InferenceSession CpuSession() =>
        _cpu ?? throw new NotSupportedException($"the KV cache is on {_session.Device}; state files hold CPU caches (the CPU engine's InferenceSession)");

    private (string Fed, List<ChatMessage> Messages) ReadChatState(string data, string path)
    {
        if (data.Length == 0)
        {
            throw new InvalidDataException($"{path}: holds no conversation (a state saved by kvaq generate --prompt-cache?); /load reads files written by /save");
        }

        try
        {
            using var doc = JsonDocument.Parse(data);
            var root = doc.RootElement;
            if (root.GetProperty("format").GetString() != ChatStateFormat)
            {
                throw new InvalidDataException($"{path}: holds no conversation of this kvaq (format '{root.GetProperty("format").GetString()}', expected '{ChatStateFormat}')");
            }

            string template = root.GetProperty("template").GetString() ?? string.Empty;
            if (template != Template.Name)
            {
                throw new InvalidDataException($"{path}: the conversation was saved with chat template {template}, this chat uses {Template.Name} (--chat-template {template})");
            }

            var messages = root.GetProperty("messages").EnumerateArray()
                .Select(m => new ChatMessage(m.GetProperty("role").GetString() ?? string.Empty, m.GetProperty("content").GetString() ?? string.Empty))
                .ToList();
            return (root.GetProperty("fed_text").GetString() ?? string.Empty, messages);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path}: the conversation data is damaged: {e.Message}", e);
        }
    }

    // The turn through Generator, over the whole conversation with what the cache holds marked cached (an empty turn, fed
    // nothing, samples from the last position's logits); the cache then holds the turn and the tokens fed back.
    private GenerationResult Run(
        List<int> turnTokens, bool feed, int maxTokens, Sampler sampler, Action<string>? onText, CancellationToken cancel, IReadOnlyList<string>? stopTexts, LogprobOptions? logprobs)
    {
        int cached = _tokens.Count;
        var all = feed ? [.. _tokens, .. turnTokens] : new List<int>(_tokens);
        var result = new Generator(_session, _tokenizer) { Speculative = Speculative }.Generate(all, cached, maxTokens, sampler, onText, stopTexts, logprobs: logprobs, endOfTurn: _endOfTurn, cancel: cancel);
        _tokens.Clear();
        _tokens.AddRange(all);
        _tokens.AddRange(result.Tokens.Take(_session.Position - all.Count));
        return result with { PromptTokens = turnTokens };
    }

    /// <summary>
    /// When the new turn and <paramref name="maxTokens"/> more positions do not fit after what the cache holds: the
    /// conversation without its oldest exchanges (the system message kept) that fits from an empty cache, the cache
    /// cleared; null when no shift is needed or when dropping cannot help (a conversation of the new message alone).
    /// </summary>
    private (List<ChatMessage> Messages, string Render)? Shift(List<ChatMessage> messages, int maxTokens)
    {
        string render = Template.Render(messages, addGenerationPrompt: true);
        bool past = render.StartsWith(_fedText, StringComparison.Ordinal);
        int turn = _tokenizer.Encode(past ? render[_fedText.Length..] : AfterThePast(render), addBos: Position == 0, parseSpecial: Template != ChatTemplate.None).Count;
        long room = Math.Min(maxTokens, Capacity / 2);
        if (Position + turn + room <= Capacity)
        {
            return null;
        }

        int first = messages.Count > 0 && messages[0].Role == "system" ? 1 : 0;
        var kept = messages;
        int dropped = 0;
        while (kept.Count - first > 1)
        {
            // One exchange: the oldest message after the system one and, when it is the user's, the reply after it.
            int n = kept[first].Role == "user" && kept.Count - first > 2 && kept[first + 1].Role == "assistant" ? 2 : 1;
            kept = [.. kept.Take(first), .. kept.Skip(first + n)];
            dropped += n;
            render = Template.Render(kept, addGenerationPrompt: true);
            int tokens = _tokenizer.Encode(render, addBos: true, parseSpecial: Template != ChatTemplate.None).Count;
            if (tokens + room <= Capacity || kept.Count - first == 1)
            {
                break;
            }
        }

        if (dropped == 0 || _tokenizer.Encode(render, addBos: true, parseSpecial: Template != ChatTemplate.None).Count > Capacity)
        {
            // Nothing to drop, or the new message alone does not fit: the conversation stays as it is (and the turn is refused).
            return null;
        }

        int before = Position;
        _session.Reset();
        _tokens.Clear();
        _fedText = string.Empty;
        _messages.Clear();
        _messages.AddRange(kept.Take(kept.Count - 1));
        LastShift = new ContextShiftInfo(dropped, before);
        return (kept, render);
    }

    private string AfterThePast(string render)
    {
        string past = Template.Render(_messages, addGenerationPrompt: false);
        return render.StartsWith(past, StringComparison.Ordinal)
            ? render[past.Length..]
            : throw new InvalidOperationException($"chat template {Template.Name}: the rendering of the conversation changed its past");
    }

    private void Feed(int token)
    {
        _session.Decode(token);
        _tokens.Add(token);
    }
}

/// <summary>A context shift of <see cref="ChatSession"/>: <paramref name="DroppedMessages"/> oldest messages dropped,
/// the cache (which held <paramref name="PositionsBefore"/> positions) cleared and the kept conversation fed again.</summary>
public sealed record ContextShiftInfo(int DroppedMessages, int PositionsBefore);
