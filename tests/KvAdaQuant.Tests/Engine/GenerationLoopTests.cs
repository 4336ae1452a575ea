using KvAdaQuant.Engine;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// The loop the CPU <see cref="Generator"/> and the GPU <c>CudaGenerator</c> share, driven by a scripted engine that
/// returns a fixed token sequence: where it stops, what it counts, what it streams, and its errors.
/// </summary>
public class GenerationLoopTests
{
    private static GenerationResult RunScripted(
        int[] script, int maxTokens, int capacity, int[] prompt, List<string>? streamed = null, int endOfTurn = -1, CancellationToken cancel = default, string[]? stopTexts = null)
    {
        using var model = ModelLoader.Load("stories260K");
        int position = 0, next = 0;
        return GenerationLoop.Run(
            prompt,
            model.Tokenizer!,
            maxTokens,
            capacity,
            prefill: () =>
            {
                position = prompt.Length;
                return script[next++];
            },
            step: t =>
            {
                Assert.Equal(script[next - 1], t);
                position++;
                return script[next++];
            },
            position: () => position,
            kvBytes: () => 1000L * position,
            streamed is null ? null : streamed.Add,
            endOfTurn,
            cancel,
            stopTexts);
    }

    [Fact]
    public void StopsAtEosWithoutEmittingIt()
    {
        // stories260K: BOS 1, EOS 2.
        var streamed = new List<string>();
        var r = RunScripted([300, 301, 2, 302], maxTokens: 10, capacity: 64, prompt: [1, 5], streamed);
        Assert.Equal("eos", r.StopReason);
        Assert.Equal([300, 301], r.Tokens);
        Assert.Equal(string.Concat(streamed), r.Text);
        Assert.Equal(2, streamed.Count);
        Assert.Equal(4000, r.KvBytes); // prompt (2) + 300 and 301 appended; EOS is sampled, never appended
    }

    [Fact]
    public void StopsAtTheTokenLimitWithoutAnExtraStep()
    {
        var r = RunScripted([300, 301, 302, 303], maxTokens: 3, capacity: 64, prompt: [1]);
        Assert.Equal("max_tokens", r.StopReason);
        Assert.Equal([300, 301, 302], r.Tokens);
        Assert.Equal(3000, r.KvBytes); // prompt + 2 steps: the last token is sampled, never appended
    }

    [Fact]
    public void StopsWhenTheContextIsFull()
    {
        var r = RunScripted([300, 301, 302, 303, 304], maxTokens: 10, capacity: 3, prompt: [1]);
        Assert.Equal("context_full", r.StopReason);
        Assert.Equal([300, 301, 302], r.Tokens);
        Assert.Equal(3000, r.KvBytes);
    }

    [Fact]
    public void ZeroTokensRunsThePromptOnly()
    {
        var r = RunScripted([300], maxTokens: 0, capacity: 8, prompt: [1, 5, 6]);
        Assert.Empty(r.Tokens);
        Assert.Equal("max_tokens", r.StopReason);
        Assert.Equal(0, r.DecodeTokensPerSecond);
        Assert.True(r.PrefillTokensPerSecond > 0);
    }

    [Fact]
    public void BadPromptsAndLimitsAreClearErrors()
    {
        Assert.Contains("no tokens", Assert.Throws<ArgumentException>(() => RunScripted([300], 4, 8, [])).Message);
        Assert.Contains("the context holds 2", Assert.Throws<ArgumentException>(() => RunScripted([300], 4, 2, [1, 5, 6])).Message);
        Assert.Contains("--max-tokens", Assert.Throws<ArgumentOutOfRangeException>(() => RunScripted([300], -1, 8, [1])).Message);
    }

    [Fact]
    public void StopsAtTheEndOfTurnTokenLikeEos()
    {
        var r = RunScripted([300, 301, 302, 303], maxTokens: 10, capacity: 64, prompt: [1], endOfTurn: 302);
        Assert.Equal("eos", r.StopReason);
        Assert.Equal([300, 301], r.Tokens);
        Assert.Equal(3000, r.KvBytes);
    }

    [Fact]
    public void StopsOnceTheTextEndsWithAStopTextKeepingIt()
    {
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        int[] script = [.. tok.Encode(" the big dog ran home", addBos: false), 2];
        var streamed = new List<string>();
        var r = RunScripted(script, maxTokens: 20, capacity: 64, prompt: [1], streamed, stopTexts: ["cat", "dog"]);
        Assert.Equal("stop_text", r.StopReason);
        Assert.EndsWith("dog", r.Text, StringComparison.Ordinal);
        Assert.Equal("the big dog", r.Text.TrimStart());
        Assert.Equal(string.Concat(streamed), r.Text);
        Assert.Equal(1000L * r.Tokens.Count, r.KvBytes); // prompt + all but the last token: like the token limit's, it is not appended
    }

    [Fact]
    public void StopsAfterTheStreamedTokenWhenCancelled()
    {
        using var cts = new CancellationTokenSource();
        var streamed = new List<string>();
        int n = 0;
        var r = RunScriptedWithCallback([300, 301, 302, 303, 304], cts, () => ++n == 2);
        Assert.Equal("cancelled", r.StopReason);
        Assert.Equal([300, 301], r.Tokens);
        Assert.Equal(2000, r.KvBytes);

        GenerationResult RunScriptedWithCallback(int[] script, CancellationTokenSource source, Func<bool> cancelNow)
        {
            using var model = ModelLoader.Load("stories260K");
            int position = 0, next = 0;
            return GenerationLoop.Run(
                [1],
                model.Tokenizer!,
                10,
                64,
                prefill: () =>
                {
                    position = 1;
                    return script[next++];
                },
                step: t =>
                {
                    position++;
                    return script[next++];
                },
                position: () => position,
                kvBytes: () => 1000L * position,
                onText: piece =>
                {
                    streamed.Add(piece);
                    if (cancelNow())
                    {
                        source.Cancel();
                    }
                },
                cancel: source.Token);
        }
    }
}
