using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>/v1/chat/completions</c> with a real template: a GGUF of stories260K (its tokenizer has <c>&lt;s&gt;</c> and
/// <c>&lt;/s&gt;</c> as control tokens) served with <c>--chat-template llama2</c> answers as <see cref="ChatSession"/> does.
/// </summary>
public class ServeChatTemplateTests
{
    [Fact]
    public void Chat_completion_with_the_llama2_template_equals_a_chat_session_reply()
    {
        using var tmp = new TempDir();
        string path = tmp.File("s260k.gguf");
        using (var bin = ModelLoader.Load("stories260K"))
        {
            GgufModelExporter.FromModel(bin, ConvertedTokenizer.ToGguf(bin, null), KvAdaQuant.Numerics.GgmlType.F32, "stories260K").Write(path);
        }

        // A later turn: the rendering holds </s><s> between the turns, each one control id, not text.
        ChatMessage[] conversation =
        [
            new("system", "You tell stories."), new("user", "Once upon a time"), new("assistant", " there was a dog."), new("user", "What did the dog do?"),
        ];
        GenerationResult expected, later;
        List<int> promptTokens, laterTokens;
        using (var model = ModelLoader.Load(path))
        using (var transformer = new Transformer(model, 1))
        using (var session = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(128))))
        {
            var chat = new ChatSession(session, model.Tokenizer!, ChatTemplate.Llama2, "You tell stories.");
            expected = chat.Reply("Once upon a time", 24, new Sampler());
            promptTokens = [.. expected.PromptTokens];
            laterTokens = model.Tokenizer!.Encode(ChatTemplate.Llama2.Render(conversation, addGenerationPrompt: true), addBos: true, parseSpecial: true);
            Assert.Contains(model.Tokenizer.EosToken, laterTokens);
            Assert.Equal(2, laterTokens.Count(t => t == model.Tokenizer.BosToken));
            later = new Generator(session, model.Tokenizer).Generate(laterTokens, 16, new Sampler());
        }

        using var server = new ServeProcess("-m", path, "--chat-template", "llama2", "--kv", "k4v2", "--ctx", "128", "--threads", "1");
        const string request = """{"messages": [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Once upon a time"}], "max_tokens": 24}""";
        var (status, body) = server.Post("/v1/chat/completions", request);
        Assert.Equal(200, status);
        Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Equal(expected.StopReason == "eos" ? "stop" : "length", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(promptTokens.Count, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.Tokens.Count, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // The prompt is the template's text with its control tokens as single ids: what /tokenize gives for the rendering.
        string rendered = ChatTemplate.Llama2.Render([new ChatMessage("system", "You tell stories."), new ChatMessage("user", "Once upon a time")], addGenerationPrompt: true);
        var (_, tokens) = server.Post("/tokenize", JsonSerializer.Serialize(new { content = rendered, add_special = true }));
        Assert.Equal(promptTokens, tokens.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()));

        // /apply-template gives that rendering (llama-server's endpoint); bad messages are refused naming them.
        var (applied, prompt) = server.Post("/apply-template", """{"messages": [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Once upon a time"}]}""");
        Assert.Equal(200, applied);
        Assert.Equal(rendered, prompt.GetProperty("prompt").GetString());
        var (bad, error) = server.Post("/apply-template", """{"messages": [{"role": "robot", "content": "beep"}]}""");
        Assert.Equal(400, bad);
        Assert.Equal("messages[0].role: unknown role 'robot'; expected system, user, assistant or tool", error.GetProperty("error").GetProperty("message").GetString());

        (status, body) = server.Post("/v1/chat/completions", JsonSerializer.Serialize(new { messages = conversation.Select(m => new { role = m.Role, content = m.Content }), max_tokens = 16 }));
        Assert.Equal(200, status);
        Assert.Equal(later.Text, body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Equal(laterTokens.Count, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(later.Tokens.Count, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var (_, models) = server.Get("/v1/models");
        Assert.Equal("llama2", models.GetProperty("data")[0].GetProperty("meta").GetProperty("chat_template").GetString());
    }
}
