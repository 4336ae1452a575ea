using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

/// <summary><see cref="ChatSession.Save"/> and <see cref="ChatSession.Load"/>: a loaded conversation goes on exactly as the saved one.</summary>
public sealed class ChatSessionStateTests : IDisposable
{
    private static readonly Sampler Greedy = new(0f, 0, 1f, 1);
    private readonly string _dir = Directory.CreateTempSubdirectory("kvaq-chat-state-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("fp32", "none")]
    [InlineData("k4v2", "none")]
    [InlineData("k2v4:r8:sink4", "none")]
    [InlineData("k4v2:kpc:kg16", "chatml")]
    public void A_loaded_conversation_replies_as_the_saved_one_would_have(string kv, string templateName)
    {
        using var model = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(model, 1);
        var template = ChatTemplate.Parse(templateName);
        var tok = templateName == "none" ? model.Tokenizer! : new ControlTokens(model.Tokenizer!);
        using var s1 = new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(256)));
        var chat = new ChatSession(s1, tok, template, "Be kind.");
        chat.Reply("Once upon a time", 14, Greedy);
        string file = Path.Combine(_dir, "chat.kvstate");
        long bytes = chat.Save(file);
        Assert.Equal(new FileInfo(file).Length, bytes);
        var expected = chat.Reply("The dog", 14, Greedy);
        var more = chat.Reply(string.Empty, 6, Greedy);

        using var s2 = new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(256)));
        var loaded = new ChatSession(s2, tok, template);
        loaded.Reply("Something else entirely", 5, Greedy); // replaced by the load
        var state = loaded.Load(file);
        Assert.Equal(bytes, state.Bytes);
        Assert.Equal(["system", "user", "assistant"], loaded.Messages.Select(m => m.Role));
        Assert.Equal("Be kind.", loaded.Messages[0].Content);
        var again = loaded.Reply("The dog", 14, Greedy);
        Assert.Equal(expected.PromptTokens, again.PromptTokens);
        Assert.Equal(expected.Tokens, again.Tokens);
        Assert.Equal(expected.Text, again.Text);
        Assert.Equal(more.Tokens, loaded.Reply(string.Empty, 6, Greedy).Tokens);
        Assert.Equal(chat.Tokens, loaded.Tokens);
        Assert.Equal(chat.Messages, loaded.Messages);
    }

    [Fact]
    public void Files_without_this_conversation_are_refused_and_the_conversation_is_kept()
    {
        using var model = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(model, 1);
        var tok = model.Tokenizer!;
        using var s1 = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(128)));
        var chat = new ChatSession(s1, tok, ChatTemplate.None);
        chat.Reply("Once upon a time", 8, Greedy);
        string file = Path.Combine(_dir, "a.kvstate");
        chat.Save(file);

        using var s2 = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(128)));
        var other = new ChatSession(s2, new ControlTokens(tok), ChatTemplate.Parse("chatml"));
        other.Reply("Hello", 4, Greedy);
        var tokens = other.Tokens.ToArray();
        var e = Assert.Throws<InvalidDataException>(() => other.Load(file));
        Assert.Equal($"{file}: the conversation was saved with chat template none, this chat uses chatml (--chat-template none)", e.Message);
        Assert.Equal(tokens, other.Tokens);
        Assert.Equal(tokens.Length, other.Position);

        // A generate --prompt-cache state holds no conversation.
        string plain = Path.Combine(_dir, "generate.kvstate");
        using (var s3 = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(128))))
        {
            s3.Prefill([1, 400, 401]);
            SessionStateFile.SaveFile(plain, s3, [1, 400, 401]);
        }

        e = Assert.Throws<InvalidDataException>(() => chat.Load(plain));
        Assert.Contains("holds no conversation (a state saved by kvaq generate --prompt-cache?); /load reads files written by /save", e.Message);
        Assert.Equal(2, chat.Messages.Count);
        Assert.Equal(chat.Tokens.Count, chat.Position);

        using var s4 = new InferenceSession(transformer, KvCacheFactory.Create("fp16", transformer.CacheLayout(128)));
        var fp16 = new ChatSession(s4, tok, ChatTemplate.None);
        Assert.Throws<KvCacheException>(() => fp16.Load(file));
    }

    // The stories tokenizer with chatml's control tokens as single tokens (ids taken from the top of its vocabulary).
    private sealed class ControlTokens(KvAdaQuant.Tokenization.ITokenizer inner) : KvAdaQuant.Tokenization.ITokenizer
    {
        private static readonly string[] Specials = ["<|im_start|>", "<|im_end|>"];

        public int VocabSize => inner.VocabSize;

        public int BosToken => inner.BosToken;

        public int EosToken => inner.EosToken;

        public List<int> Encode(string text, bool addBos) => inner.Encode(text, addBos);

        public List<int> Encode(string text, bool addBos, bool parseSpecial)
        {
            int i = Array.IndexOf(Specials, text);
            return parseSpecial && i >= 0 ? [VocabSize - 1 - i] : inner.Encode(text, addBos);
        }

        public byte[] DecodeBytes(int previous, int token) => inner.DecodeBytes(previous, token);
    }
}
