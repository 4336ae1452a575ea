using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// <see cref="ChatSession"/> over the <see cref="IDecodeSession"/> interface (what <c>kvaq chat --device cuda</c> runs
/// through): a session that is not an <see cref="InferenceSession"/> gives exactly the replies of the CPU constructor, and
/// state files are refused on it with the conversation kept.
/// </summary>
public class ChatSessionDecodeSessionTests
{
    private static readonly Sampler Greedy = new(0f, 0, 1f, 1);

    [Theory]
    [InlineData("stories260K", "fp32", false)]
    [InlineData("stories260K", "fp32", true)]
    [InlineData("stories3M-q80", "k4v2", false)]
    public void Through_the_interface_a_conversation_gives_exactly_the_replies_of_the_InferenceSession_constructor(string model, string kv, bool penalties)
    {
        var sampler = penalties ? new Sampler { RepeatPenalty = 1.3f, FrequencyPenalty = 0.1f } : Greedy;
        using var m = ModelLoader.Load(model);
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var cpu = ForwardingDecodeSession.NewSession(transformer, kv, 512);
        using var inner = ForwardingDecodeSession.NewSession(transformer, kv, 512);
        var fake = new ForwardingDecodeSession(inner);
        var direct = new ChatSession(cpu, tok, ChatTemplate.None);
        var through = new ChatSession(fake, tok, ChatTemplate.None);
        Assert.True(direct.SupportsStateFiles);
        Assert.False(through.SupportsStateFiles);
        Assert.Equal(512, through.Capacity);

        // A reply, an empty message (continues from the logits of the last position), a reply cut by a stop text.
        (string Message, int Max, string[]? Stops)[] turns = [("Once upon a time", 20, null), (string.Empty, 10, null), (" The dog", 40, ["."])];
        var reasons = new List<string>();
        int prompted = 0;
        foreach (var (message, max, stops) in turns)
        {
            var a = direct.Reply(message, max, sampler, stopTexts: stops);
            var b = through.Reply(message, max, sampler, stopTexts: stops);
            Assert.Equal(a.PromptTokens, b.PromptTokens);
            Assert.Equal(a.Tokens, b.Tokens);
            Assert.Equal(a.Text, b.Text);
            Assert.Equal(a.StopReason, b.StopReason);
            Assert.Equal(a.KvBytes, b.KvBytes);
            Assert.Equal(direct.Tokens, through.Tokens);
            Assert.Equal(through.Tokens.Count, through.Position);
            reasons.Add(b.StopReason);
            prompted += b.PromptTokens.Count;
        }

        Assert.Equal(["max_tokens", "max_tokens", "stop_text"], reasons);
        Assert.Equal(2, fake.Prefills);  // the empty message feeds nothing
        Assert.Equal(through.Position, prompted + fake.Decodes);
    }

    [Fact]
    public void Through_the_interface_a_context_shift_equals_the_InferenceSession_constructor()
    {
        using var m = ModelLoader.Load("stories260K");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var cpu = ForwardingDecodeSession.NewSession(transformer, "fp32", 64);
        using var inner = ForwardingDecodeSession.NewSession(transformer, "fp32", 64);
        var direct = new ChatSession(cpu, tok, ChatTemplate.None, "You tell stories.") { ContextShift = true };
        var through = new ChatSession(new ForwardingDecodeSession(inner), tok, ChatTemplate.None, "You tell stories.") { ContextShift = true };
        int shifts = 0;
        foreach (string message in new[] { "Once upon a time", " The dog ran", " Lily saw a cat", " The sun" })
        {
            var a = direct.Reply(message, 20, Greedy);
            var b = through.Reply(message, 20, Greedy);
            Assert.Equal(direct.LastShift, through.LastShift);
            Assert.Equal(a.Tokens, b.Tokens);
            Assert.Equal(direct.Tokens, through.Tokens);
            Assert.Equal(direct.Messages, through.Messages);
            shifts += through.LastShift is null ? 0 : 1;
        }

        Assert.True(shifts >= 1);
    }

    [Fact]
    public void State_files_are_refused_on_a_session_that_is_not_an_InferenceSession_and_the_conversation_goes_on()
    {
        using var tmp = new TempDir();
        using var m = ModelLoader.Load("stories260K");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var cpu = ForwardingDecodeSession.NewSession(transformer, "fp32", 128);
        using var inner = ForwardingDecodeSession.NewSession(transformer, "fp32", 128);
        var saved = new ChatSession(cpu, tok, ChatTemplate.None);
        saved.Reply("Once upon a time", 8, Greedy);
        string file = Path.Combine(tmp.Path, "chat.state");
        saved.Save(file);

        var chat = new ChatSession(new ForwardingDecodeSession(inner), tok, ChatTemplate.None);
        chat.Reply("The dog", 8, Greedy);
        var tokens = chat.Tokens.ToList();
        string other = Path.Combine(tmp.Path, "other.state");
        var e = Assert.Throws<NotSupportedException>(() => chat.Save(other));
        Assert.Equal("the KV cache is on a test fake; state files hold CPU caches (the CPU engine's InferenceSession)", e.Message);
        Assert.False(File.Exists(other));
        e = Assert.Throws<NotSupportedException>(() => chat.Load(file));
        Assert.StartsWith("the KV cache is on a test fake; state files hold CPU caches", e.Message, StringComparison.Ordinal);
        Assert.Equal(tokens, chat.Tokens);
        Assert.Equal(2, chat.Messages.Count);
        Assert.Equal(8, chat.Reply(" The cat", 8, Greedy).Tokens.Count);

        // An InferenceSession handed over as the interface keeps them.
        using var again = ForwardingDecodeSession.NewSession(transformer, "fp32", 128);
        var viaInterface = new ChatSession((IDecodeSession)again, tok, ChatTemplate.None);
        Assert.True(viaInterface.SupportsStateFiles);
        viaInterface.Load(file);
        Assert.Equal(saved.Tokens, viaInterface.Tokens);
    }
}
