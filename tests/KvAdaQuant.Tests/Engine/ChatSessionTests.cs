using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// <see cref="ChatSession"/>: the cache is kept between turns and holds exactly the conversation, so a later reply
/// equals a fresh generation over the same tokens; templates render as their model families expect and only ever append.
/// </summary>
public class ChatSessionTests
{
    private static readonly Sampler Greedy = new(0f, 0, 1f, 1);

    private static OpenModel Open(string model, int ctx, string kv = "fp32") => new(model, ctx, kv);

    [Theory]
    [InlineData("stories260K", "fp32")]
    [InlineData("stories3M-q80", "k4v2")]
    [InlineData("stories3M-q80", "k2v4:r0")]
    public void A_later_turn_continues_the_kept_cache_exactly_as_a_fresh_generation_over_the_same_tokens(string model, string kv)
    {
        using var h = Open(model, 512, kv);
        var session = h.Session;
        var tok = h.Model.Tokenizer!;
        var chat = new ChatSession(session, tok, ChatTemplate.None);

        var first = chat.Reply("Once upon a time", 20, Greedy);
        Assert.Equal("max_tokens", first.StopReason);
        Assert.Equal(tok.Encode("Once upon a time", addBos: true).Concat(first.Tokens), chat.Tokens);
        Assert.Equal(chat.Tokens.Count, chat.Position);

        int before = chat.Position;
        var second = chat.Reply("The dog", 20, Greedy);
        Assert.Equal(tok.Encode("The dog", addBos: false), second.PromptTokens);
        Assert.Equal(chat.Tokens.Count, chat.Position);
        Assert.Equal(before + second.PromptTokens.Count + 20, chat.Position);

        // The whole conversation so far, generated from scratch in a fresh session: the same 20 tokens.
        using var h2 = Open(model, 512, kv);
        var fresh = h2.Session;
        var reference = new Generator(fresh, tok).Generate(chat.Tokens.Take(before + second.PromptTokens.Count).ToList(), 20, Greedy);
        Assert.Equal(reference.Tokens, second.Tokens);
        Assert.Equal(reference.Text, second.Text);
        Assert.Equal(["user", "assistant", "user", "assistant"], chat.Messages.Select(m => m.Role));
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("k4v2")]
    public void A_context_shift_drops_the_oldest_exchanges_and_continues_as_a_fresh_conversation_over_the_rest(string kv)
    {
        using var h = Open("stories260K", 64, kv);
        var tok = h.Model.Tokenizer!;
        var chat = new ChatSession(h.Session, tok, ChatTemplate.None, systemPrompt: "You tell stories.") { ContextShift = true };
        chat.Reply("Once upon a time", 20, Greedy);
        Assert.Null(chat.LastShift);
        chat.Reply(" The dog ran", 20, Greedy);
        Assert.Null(chat.LastShift);
        int before = chat.Position;

        // 50 positions used: the next message and 20 more do not fit in 64, so the first exchange goes.
        var third = chat.Reply(" Lily saw a cat", 20, Greedy);
        Assert.Equal(new ContextShiftInfo(2, before), chat.LastShift);
        Assert.Equal("max_tokens", third.StopReason);
        Assert.Equal(["system", "user", "assistant", "user", "assistant"], chat.Messages.Select(m => m.Role));
        Assert.Equal(" The dog ran", chat.Messages[1].Content);
        Assert.Equal(chat.Tokens.Count, chat.Position);

        // Exactly a fresh generation over the kept conversation's rendering.
        var kept = chat.Messages.Take(4).ToList();
        var prompt = tok.Encode(ChatTemplate.None.Render(kept, addGenerationPrompt: true), addBos: true);
        Assert.Equal(prompt, third.PromptTokens);
        using var h2 = Open("stories260K", 64, kv);
        var reference = new Generator(h2.Session, tok).Generate(prompt, 20, Greedy);
        Assert.Equal(reference.Tokens, third.Tokens);

        // The next turn fits after the shift only if it shifts again; the system message always stays.
        chat.Reply(" The sun", 20, Greedy);
        Assert.Equal("system", chat.Messages[0].Role);
        Assert.Equal(chat.Tokens.Count, chat.Position);
    }

    [Fact]
    public void Without_context_shift_a_full_context_stops_the_reply_and_refuses_the_next_turn()
    {
        using var h = Open("stories260K", 64);
        var chat = new ChatSession(h.Session, h.Model.Tokenizer!, ChatTemplate.None);
        chat.Reply("Once upon a time", 20, Greedy);
        chat.Reply(" The dog ran", 20, Greedy);
        var third = chat.Reply(" Lily saw a cat", 20, Greedy);
        Assert.Null(chat.LastShift);
        Assert.True(third.Tokens.Count < 20);
        Assert.Equal(64, chat.Position);
        var e = Assert.Throws<ArgumentException>(() => chat.Reply(" The sun", 20, Greedy));
        Assert.StartsWith("this turn needs 4 tokens but 0 of the context's 64 positions are left", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_message_longer_than_the_context_is_refused_and_the_conversation_kept_even_with_context_shift()
    {
        using var h = Open("stories260K", 64);
        var chat = new ChatSession(h.Session, h.Model.Tokenizer!, ChatTemplate.None) { ContextShift = true };
        chat.Reply("Once upon a time", 20, Greedy);
        var tokens = chat.Tokens.ToList();
        Assert.Throws<ArgumentException>(() => chat.Reply(string.Concat(Enumerable.Repeat(" The dog ran", 30)), 20, Greedy));
        Assert.Null(chat.LastShift);
        Assert.Equal(tokens, chat.Tokens);
        Assert.Equal(2, chat.Messages.Count);
    }

    [Fact]
    public void An_empty_message_with_the_none_template_continues_the_reply()
    {
        using var h = Open("stories260K", 512);
        var tok = h.Model.Tokenizer!;
        var chat = new ChatSession(h.Session, tok, ChatTemplate.None);
        var first = chat.Reply("Once upon a time", 10, Greedy);
        var more = chat.Reply(string.Empty, 10, Greedy);
        Assert.Empty(more.PromptTokens);
        Assert.Equal(5 + 20, chat.Position);

        using var h2 = Open("stories260K", 512);
        var whole = new Generator(h2.Session, tok).Generate("Once upon a time", 20, Greedy);
        Assert.Equal(whole.Tokens, first.Tokens.Concat(more.Tokens));
        Assert.Equal(whole.Text, first.Text + more.Text);
    }

    [Fact]
    public void A_stop_text_ends_the_reply_where_its_text_first_ends_with_it()
    {
        using var h = Open("stories260K", 512);
        var tok = h.Model.Tokenizer!;
        var chat = new ChatSession(h.Session, tok, ChatTemplate.None);
        var stopped = chat.Reply("Once upon a time", 60, Greedy, stopTexts: ["park", "Lily"]);
        Assert.Equal("stop_text", stopped.StopReason);
        Assert.EndsWith("Lily", stopped.Text, StringComparison.Ordinal);
        Assert.Equal(chat.Tokens.Count, chat.Position);
        Assert.Equal(5 + stopped.Tokens.Count, chat.Position);  // the last token fed after the stop

        // The uncapped reply, cut after its first token whose text completes a stop text.
        using var h2 = Open("stories260K", 512);
        var whole = new Generator(h2.Session, tok).Generate("Once upon a time", 60, Greedy);
        Assert.Equal(whole.Tokens.Take(stopped.Tokens.Count), stopped.Tokens);
        var shorter = tok.Decode([.. stopped.Tokens.SkipLast(1)]);
        Assert.DoesNotContain("Lily", shorter, StringComparison.Ordinal);
        Assert.DoesNotContain("park", shorter, StringComparison.Ordinal);
    }

    [Fact]
    public void An_empty_first_message_is_refused_when_the_tokenizer_adds_no_bos()
    {
        using var h = Open("stories260K", 64);
        var chat = new ChatSession(h.Session, new WithoutBos(h.Model.Tokenizer!), ChatTemplate.None);
        var e = Assert.Throws<ArgumentException>(() => chat.Reply(string.Empty, 4, Greedy));
        Assert.Equal("the message is empty and there is no earlier reply to continue", e.Message);
        Assert.Equal(0, chat.Position);
        Assert.Equal(4, chat.Reply("Once", 4, Greedy).Tokens.Count);
    }

    [Fact]
    public void Reset_forgets_the_conversation_and_the_first_reply_comes_again()
    {
        using var h = Open("stories260K", 512);
        var session = h.Session;
        var chat = new ChatSession(session, h.Model.Tokenizer!, ChatTemplate.None);
        var first = chat.Reply("Once upon a time", 16, Greedy);
        chat.Reply("The cat", 16, Greedy);
        chat.Reset();
        Assert.Equal(0, chat.Position);
        Assert.Empty(chat.Messages);
        Assert.Equal(first.Tokens, chat.Reply("Once upon a time", 16, Greedy).Tokens);
    }

    [Fact]
    public void A_turn_that_does_not_fit_is_refused_before_it_runs_and_the_conversation_stays()
    {
        using var h = Open("stories260K", 24);
        var session = h.Session;
        var chat = new ChatSession(session, h.Model.Tokenizer!, ChatTemplate.None);
        chat.Reply("Once upon a time", 10, Greedy);
        int position = chat.Position;
        var tokens = chat.Tokens.ToArray();
        var e = Assert.Throws<ArgumentException>(() => chat.Reply("There was a big dog and a little cat in the park", 10, Greedy));
        Assert.Contains($"of the context's 24 positions are left", e.Message);
        Assert.Equal(position, chat.Position);
        Assert.Equal(tokens, chat.Tokens);
        Assert.Equal(2, chat.Messages.Count);
    }

    [Fact]
    public void Llama2_template_feeds_control_tokens_and_the_end_of_turn_after_an_eos_stop()
    {
        using var tmp = new TempDir();
        string path = System.IO.Path.Combine(tmp.Path, "s260k-chat.gguf");
        using (var bin = ModelLoader.Load("stories260K"))
        {
            var meta = ConvertedTokenizer.ToGguf(bin, null).Set("tokenizer.chat_template", "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}");
            GgufModelExporter.FromModel(bin, meta, GgmlType.F32, "stories260K chat").Write(path);
        }

        Assert.Same(ChatTemplate.Llama2, ChatTemplate.Detect(ChatTemplateText.Read(path, null)));
        using var h = Open(path, 512);
        var session = h.Session;
        var tok = h.Model.Tokenizer!;
        var chat = new ChatSession(session, tok, ChatTemplate.Llama2, "Tell stories.");

        // A long reply: stories260K ends its story with EOS (</s>), which is the llama2 template's end of turn.
        var first = chat.Reply("Once upon a time", 500, Greedy);
        Assert.Equal("eos", first.StopReason);
        Assert.Equal(tok.Encode("[INST] <<SYS>>\nTell stories.\n<</SYS>>\n\nOnce upon a time [/INST]", addBos: true, parseSpecial: true), first.PromptTokens);
        Assert.Equal(tok.EosToken, chat.Tokens[^1]);  // the end of turn, fed after the stop
        Assert.Equal(chat.Tokens.Count, chat.Position);

        var second = chat.Reply("The end", 8, Greedy);
        Assert.Equal(tok.BosToken, second.PromptTokens[0]);  // <s> of "<s>[INST] The end [/INST]" as the control token
        Assert.Equal(tok.Encode("<s>[INST] The end [/INST]", addBos: false, parseSpecial: true), second.PromptTokens);
        Assert.Equal(2, chat.Tokens.Count(t => t == tok.BosToken));
        Assert.Equal(
            "[INST] <<SYS>>\nTell stories.\n<</SYS>>\n\nOnce upon a time [/INST]" + first.Text + "</s><s>[INST] The end [/INST]" + second.Text + "</s>",
            ChatTemplate.Llama2.Render(chat.Messages, addGenerationPrompt: false));
    }

    [Fact]
    public void A_cancelled_reply_keeps_what_it_streamed_and_the_next_turn_continues_after_it()
    {
        using var h = Open("stories260K", 512);
        var session = h.Session;
        var tok = h.Model.Tokenizer!;
        var chat = new ChatSession(session, tok, ChatTemplate.None);
        using var cts = new CancellationTokenSource();
        int pieces = 0;
        var cancelled = chat.Reply("Once upon a time", 200, Greedy, _ => { if (++pieces == 7) { cts.Cancel(); } }, cts.Token);
        Assert.Equal("cancelled", cancelled.StopReason);
        Assert.Equal(7, cancelled.Tokens.Count);
        Assert.Equal(tok.Encode("Once upon a time", addBos: true).Concat(cancelled.Tokens), chat.Tokens);  // the 7th fed after the stop
        Assert.Equal(chat.Tokens.Count, chat.Position);

        // The same 7 tokens as an uncancelled reply, and the next turn continues from them.
        using var h2 = Open("stories260K", 512);
        var s2 = h2.Session;
        Assert.Equal(cancelled.Tokens, new Generator(s2, tok).Generate("Once upon a time", 7, Greedy).Tokens);
        var next = chat.Reply("The dog", 5, Greedy);
        Assert.Equal(5 + 7 + next.PromptTokens.Count + 5, chat.Position);
    }

    [Fact]
    public void A_reply_that_fails_midway_resets_the_conversation_and_the_next_one_starts_afresh()
    {
        using var h = Open("stories260K", 512);
        var session = h.Session;
        var chat = new ChatSession(session, h.Model.Tokenizer!, ChatTemplate.None, "A story:");
        var first = chat.Reply("Once upon a time", 12, Greedy);
        int pieces = 0;
        var e = Assert.Throws<InvalidOperationException>(() => chat.Reply("The dog", 12, Greedy, _ => { if (++pieces == 3) { throw new InvalidOperationException("reader gone"); } }));
        Assert.Equal("reader gone", e.Message);
        Assert.Equal(0, chat.Position);
        Assert.Empty(chat.Tokens);
        Assert.Equal([new ChatMessage("system", "A story:")], chat.Messages);
        Assert.Equal(first.Tokens, chat.Reply("Once upon a time", 12, Greedy).Tokens);
    }

    [Fact]
    public void A_template_whose_control_tokens_the_tokenizer_lacks_is_refused_naming_the_token()
    {
        using var h = Open("stories260K", 64);
        var session = h.Session;
        var e = Assert.Throws<ArgumentException>(() => new ChatSession(session, h.Model.Tokenizer!, ChatTemplate.ChatMl));
        Assert.Equal("chat template chatml: the tokenizer has no control token <|im_start|> (choose another template, or none)", e.Message);
    }

    [Fact]
    public void Templates_render_each_family_and_a_longer_conversation_only_appends()
    {
        ChatMessage[] conversation = [new("system", "Be brief."), new("user", "Hi"), new("assistant", "Hello!"), new("user", "Bye")];
        Assert.Equal(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
            ChatTemplate.ChatMl.Render(conversation, addGenerationPrompt: true));
        Assert.Equal(
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\n",
            ChatTemplate.Llama3.Render(conversation, addGenerationPrompt: true));
        Assert.Equal(
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello!</s><s>[INST] Bye [/INST]",
            ChatTemplate.Llama2.Render(conversation, addGenerationPrompt: true));
        Assert.Equal("Be brief.HiHello!Bye", ChatTemplate.None.Render(conversation, addGenerationPrompt: true));

        foreach (var t in ChatTemplate.All)
        {
            for (int k = 0; k < conversation.Length; k++)
            {
                string shorter = t.Render(conversation[..k], addGenerationPrompt: false);
                Assert.StartsWith(shorter, t.Render(conversation[..(k + 1)], addGenerationPrompt: false), StringComparison.Ordinal);
                Assert.StartsWith(shorter, t.Render(conversation[..(k + 1)], addGenerationPrompt: true), StringComparison.Ordinal);
            }
        }

        var e = Assert.Throws<ArgumentException>(() => ChatTemplate.ChatMl.Render([new("tool", "x")], false));
        Assert.Equal("chat message role 'tool': expected system, user or assistant (tool messages: render with ChatToolFormat)", e.Message);
    }

    [Theory]
    [InlineData(null, "none")]
    [InlineData("", "none")]
    [InlineData("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}", "chatml")]
    [InlineData("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}", "llama3")]
    [InlineData("{% if messages[0]['role'] == 'system' %}<<SYS>>{% endif %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}", "llama2")]
    [InlineData("{% for m in messages %}<start_of_turn>{{ m.role }}{% endfor %}", null)]
    public void Detect_names_the_family_of_a_jinja_template(string? jinja, string? expected) =>
        Assert.Equal(expected, ChatTemplate.Detect(jinja)?.Name);

    [Fact]
    public void Parse_lists_the_names_on_an_unknown_one()
    {
        Assert.Same(ChatTemplate.Llama3, ChatTemplate.Parse("Llama3"));
        var e = Assert.Throws<ArgumentException>(() => ChatTemplate.Parse("gemma"));
        Assert.Equal("unknown chat template 'gemma'; expected one of none, chatml, llama3, llama2", e.Message);
    }

    /// <summary>A tokenizer with no BOS (as many byte-level BPE vocabularies).</summary>
    private sealed class WithoutBos(KvAdaQuant.Tokenization.ITokenizer inner) : KvAdaQuant.Tokenization.ITokenizer
    {
        public int VocabSize => inner.VocabSize;

        public int BosToken => -1;

        public int EosToken => inner.EosToken;

        public List<int> Encode(string text, bool addBos) => inner.Encode(text, addBos: false);

        public byte[] DecodeBytes(int previous, int token) => inner.DecodeBytes(previous, token);
    }

    /// <summary>A model, its engine and one session over a cache of <c>ctx</c> positions, disposed together.</summary>
    private sealed class OpenModel : IDisposable
    {
        private readonly Transformer _transformer;

        public OpenModel(string model, int ctx, string kv)
        {
            Model = ModelLoader.Load(model);
            _transformer = new Transformer(Model, 1);
            Session = new InferenceSession(_transformer, KvCacheFactory.Create(KvPlan.Parse(kv, Model.Config.Layers), _transformer.CacheLayout(ctx)));
        }

        public KvAdaQuant.Model.LlamaModel Model { get; }

        public InferenceSession Session { get; }

        public void Dispose()
        {
            Session.Dispose();
            _transformer.Dispose();
            Model.Dispose();
        }
    }
}
