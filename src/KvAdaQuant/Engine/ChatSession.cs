using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// A conversation over one <see cref="InferenceSession"/> whose cache is kept from turn to turn: each reply feeds only
/// the new text (the user's message in the template, after what the cache already holds) and decodes from there, as
/// llama.cpp's conversation mode does; nothing is computed twice. The tokens in the cache are <see cref="Tokens"/>.
/// </summary>
public sealed class ChatSession
{
    private readonly InferenceSession _session;
    private readonly ITokenizer _tokenizer;
    private readonly List<ChatMessage> _messages = [];
    private readonly List<int> _tokens = [];
    private readonly string? _system;
    private readonly int _endOfTurn;
    private string _fedText = string.Empty;

    /// <summary>
    /// Starts a conversation. Every control token <paramref name="template"/> writes must be one token of
    /// <paramref name="tokenizer"/>, or an <see cref="ArgumentException"/> names the first that is not. The session's cache
    /// is cleared.
    /// </summary>
    public ChatSession(InferenceSession session, ITokenizer tokenizer, ChatTemplate template, string? systemPrompt = null)
    {
        _session = session;
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
    public int Capacity => _session.Cache.Layout.Capacity;

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
        string userMessage, int maxTokens, Sampler sampler, Action<string>? onText = null, CancellationToken cancel = default, IReadOnlyList<string>? stopTexts = null)
    {
        var messages = _messages.Append(new ChatMessage("user", userMessage)).ToList();
        string render = Template.Render(messages, addGenerationPrompt: true);

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
                ? Run(turnTokens, feed: true, maxTokens, sampler, onText, cancel, stopTexts)
                : Run([_tokens[^1]], feed: false, maxTokens, sampler, onText, cancel, stopTexts) with { PromptTokens = [], PrefillTokensPerSecond = 0 };
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

    private GenerationResult Run(
        List<int> turnTokens, bool feed, int maxTokens, Sampler sampler, Action<string>? onText, CancellationToken cancel, IReadOnlyList<string>? stopTexts) =>
        GenerationLoop.Run(
            turnTokens,
            _tokenizer,
            maxTokens,
            Capacity,
            prefill: () =>
            {
                if (!feed)
                {
                    return sampler.Sample(_session.Logits);
                }

                _tokens.AddRange(turnTokens);
                return sampler.Sample(_session.Prefill(turnTokens.ToArray()));
            },
            step: t =>
            {
                _tokens.Add(t);
                return sampler.Sample(_session.Decode(t));
            },
            position: () => _session.Position,
            kvBytes: () => _session.Cache.ByteCount,
            onText,
            _endOfTurn,
            cancel,
            stopTexts);

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
