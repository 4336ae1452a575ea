using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// <see cref="ChatSession"/> on the GPU (<see cref="CudaDecodeSession"/>, what <c>kvaq chat --device cuda</c> runs):
/// with an FP16 cache its replies equal the CPU engine's with an FP16 cache token for token (greedy and with penalties,
/// context shift and a full context included); with k4v2 the first reply equals <see cref="CudaGenerator"/>'s
/// host-sampled run on the same device and plan. Runs only where libcuda and NVRTC load; skipped with the reason elsewhere.
/// </summary>
public class CudaChatTests(ITestOutputHelper output)
{
    private static readonly Sampler Greedy = new(0f, 0, 1f, 1);

    [SkippableTheory]
    [InlineData("stories260K", false)]
    [InlineData("stories260K", true)]
    [InlineData("stories3M-q80", false)]
    [InlineData("stories3M-q80", true)]
    public void GpuChatEqualsTheCpuChatWithAnFp16Cache(string name, bool penalties)
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load(name);
        var tok = model.Tokenizer!;
        var sampler = penalties ? new Sampler { RepeatPenalty = 1.3f, FrequencyPenalty = 0.1f } : Greedy;
        using var engines = new GpuAndCpuFp16(context, model, 512);
        var (decoder, cpu) = (engines.Decoder, engines.Cpu);
        var onCpu = new ChatSession(cpu, tok, ChatTemplate.None);
        var onGpu = new ChatSession(new CudaDecodeSession(decoder), tok, ChatTemplate.None);
        Assert.Equal(512, onGpu.Capacity);
        Assert.False(onGpu.SupportsStateFiles);

        // Two replies and an empty message (continues from the logits copied back after the last token fed).
        foreach (var (message, max) in new[] { ("Once upon a time", 20), (" The dog", 20), (string.Empty, 10) })
        {
            var c = onCpu.Reply(message, max, sampler);
            var g = onGpu.Reply(message, max, sampler);
            output.WriteLine($"{name} '{message}': CPU {string.Join(' ', c.Tokens)}");
            output.WriteLine($"{name} '{message}': GPU {string.Join(' ', g.Tokens)}");
            Assert.Equal(c.PromptTokens, g.PromptTokens);
            Assert.Equal(c.Tokens, g.Tokens);
            Assert.Equal(c.Text, g.Text);
            Assert.Equal(c.StopReason, g.StopReason);
            Assert.Equal(onCpu.Tokens, onGpu.Tokens);
            Assert.Equal(onGpu.Tokens.Count, onGpu.Position);
            Assert.Equal(onGpu.Position, decoder.Position);
        }

        Assert.Equal(decoder.CacheBytes, onGpu.Reply(" Lily", 4, sampler).KvBytes);
    }

    [SkippableFact]
    public void GpuChatContextShiftEqualsTheCpuOne()
    {
        // As ChatSessionTests' shift test: 64 positions, a system message, the first exchange dropped at the third turn.
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        using var engines = new GpuAndCpuFp16(context, model, 64);
        var (decoder, cpu) = (engines.Decoder, engines.Cpu);
        var onCpu = new ChatSession(cpu, tok, ChatTemplate.None, systemPrompt: "You tell stories.") { ContextShift = true };
        var onGpu = new ChatSession(new CudaDecodeSession(decoder), tok, ChatTemplate.None, systemPrompt: "You tell stories.") { ContextShift = true };
        int turn = 0;
        foreach (string message in new[] { "Once upon a time", " The dog ran", " Lily saw a cat", " The sun" })
        {
            turn++;
            var c = onCpu.Reply(message, 20, Greedy);
            var g = onGpu.Reply(message, 20, Greedy);
            output.WriteLine($"turn {turn}: shift {onGpu.LastShift}; GPU {string.Join(' ', g.Tokens)}");
            Assert.Equal(onCpu.LastShift, onGpu.LastShift);
            Assert.Equal(c.PromptTokens, g.PromptTokens);
            Assert.Equal(c.Tokens, g.Tokens);
            Assert.Equal(onCpu.Tokens, onGpu.Tokens);
            Assert.Equal(onCpu.Messages, onGpu.Messages);
            Assert.Equal(onGpu.Tokens.Count, decoder.Position);
            if (turn == 3)
            {
                Assert.NotNull(onGpu.LastShift);
                Assert.Equal(2, onGpu.LastShift!.DroppedMessages);
            }
        }
    }

    [SkippableFact]
    public void GpuChatStopsAtAFullContextAndRefusesTheNextTurnAsTheCpuDoes()
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        using var engines = new GpuAndCpuFp16(context, model, 64);
        var (decoder, cpu) = (engines.Decoder, engines.Cpu);
        var onCpu = new ChatSession(cpu, tok, ChatTemplate.None);
        var onGpu = new ChatSession(new CudaDecodeSession(decoder), tok, ChatTemplate.None);
        GenerationResult? last = null;
        foreach (string message in new[] { "Once upon a time", " The dog ran", " Lily saw a cat" })
        {
            var c = onCpu.Reply(message, 20, Greedy);
            last = onGpu.Reply(message, 20, Greedy);
            Assert.Equal(c.Tokens, last.Tokens);
            Assert.Equal(c.StopReason, last.StopReason);
        }

        Assert.True(last!.Tokens.Count < 20);
        Assert.Equal(64, onGpu.Position);
        Assert.Equal(64, decoder.Position);
        var tokens = onGpu.Tokens.ToList();
        var e = Assert.Throws<ArgumentException>(() => onGpu.Reply(" The sun", 20, Greedy));
        Assert.StartsWith("this turn needs 4 tokens but 0 of the context's 64 positions are left", e.Message, StringComparison.Ordinal);
        Assert.Equal(tokens, onGpu.Tokens);
        Assert.Equal(64, decoder.Position);
    }

    [SkippableFact]
    public void GpuK4V2ChatRunsAndItsFirstReplyEqualsTheHostSampledGenerator()
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories3M-q80");
        var tok = model.Tokenizer!;
        using var decoder = new CudaDecoder(context, model, KvPlan.Parse("k4v2", model.Config.Layers), 1, 256);

        // 5 prompt tokens and 120 generated: past the FP16 window (64 + 32), so the device quantizes the oldest rows.
        var reference = new CudaGenerator(decoder, tok).Generate("Once upon a time", 120, new Sampler());
        var chat = new ChatSession(new CudaDecodeSession(decoder), tok, ChatTemplate.None);
        var first = chat.Reply("Once upon a time", 120, Greedy);
        output.WriteLine($"k4v2 GPU chat: {string.Join(' ', first.Tokens)}");
        Assert.Equal(reference.PromptTokens, first.PromptTokens);
        Assert.Equal(reference.Tokens, first.Tokens);
        Assert.Equal(reference.Text, first.Text);

        var second = chat.Reply(" The dog", 40, Greedy);
        Assert.Equal(tok.Encode(" The dog", addBos: false), second.PromptTokens);
        Assert.NotEmpty(second.Tokens);
        Assert.Contains(second.StopReason, new[] { "max_tokens", "eos" });
        Assert.True(decoder.PackedState.Quantized > 0, $"quantized rows {decoder.PackedState.Quantized} at position {decoder.Position}");
        Assert.Equal(chat.Tokens.Count, chat.Position);
        Assert.Equal(chat.Position, decoder.Position);
        Assert.Equal(decoder.CacheBytes, second.KvBytes);
    }

    [SkippableFact]
    public void StateFilesAreRefusedOnTheGpuAndTheConversationGoesOn()
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        var plan = KvPlan.Parse("fp16", model.Config.Layers);
        using (var two = new CudaDecoder(context, model, plan, 2, 64))
        {
            var batch = Assert.Throws<ArgumentException>(() => new CudaDecodeSession(two));
            Assert.StartsWith("a decode session runs one sequence; this decoder has a batch of 2", batch.Message, StringComparison.Ordinal);
        }

        using var tmp = new TempDir();
        using var decoder = new CudaDecoder(context, model, plan, 1, 128);
        var chat = new ChatSession(new CudaDecodeSession(decoder), tok, ChatTemplate.None);
        chat.Reply("Once upon a time", 8, Greedy);
        var tokens = chat.Tokens.ToList();
        string file = Path.Combine(tmp.Path, "chat.state");
        var e = Assert.Throws<NotSupportedException>(() => chat.Save(file));
        Assert.StartsWith("the KV cache is on the GPU; state files hold CPU caches", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(file));
        e = Assert.Throws<NotSupportedException>(() => chat.Load(file));
        Assert.StartsWith("the KV cache is on the GPU; state files hold CPU caches", e.Message, StringComparison.Ordinal);
        Assert.Equal(tokens, chat.Tokens);
        Assert.Equal(tokens.Count, decoder.Position);
        Assert.Equal(8, chat.Reply(" The dog", 8, Greedy).Tokens.Count);
        Assert.Equal(chat.Tokens.Count, decoder.Position);
    }

    private static CudaContext Open() => GpuAndCpuFp16.OpenContext();
}
