using System.Diagnostics;
using System.Text;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// The generation loop every engine shares: check the prompt against the context, run it (timed as prefill,
/// including the first sample), then stream, stop on EOS/BOS, the token limit or a full context, and step
/// (timed as decode). The engine supplies how to run the prompt and how to advance by one token.
/// </summary>
internal static class GenerationLoop
{
    /// <summary>Runs one generation.</summary>
    /// <param name="promptTokens">Tokenized prompt (BOS included).</param>
    /// <param name="tokenizer">Streams text and names the stop tokens.</param>
    /// <param name="maxTokens">Tokens to generate at most.</param>
    /// <param name="capacity">Positions the cache holds.</param>
    /// <param name="prefill">Runs the whole prompt from an empty cache and returns the first sampled token.</param>
    /// <param name="step">Appends the given token and returns the next sampled one.</param>
    /// <param name="position">Positions cached so far.</param>
    /// <param name="kvBytes">Bytes of the cache, read after the run.</param>
    /// <param name="onText">Receives text as it completes.</param>
    /// <param name="endOfTurn">A token that stops the run like EOS (a chat template's end of turn), or -1.</param>
    /// <param name="cancel">Stops the run after the token being streamed (stop reason <c>cancelled</c>; that token is not fed).</param>
    /// <param name="stopTexts">Texts that end the run once the generated text ends with one of them (stop reason
    /// <c>stop_text</c>, the text kept; the last token is not fed), as llama.cpp's reverse prompts.</param>
    /// <param name="runTokens">How many prompt tokens <paramref name="prefill"/> runs (the rest were cached), for the
    /// prefill speed; -1: all of them.</param>
    public static GenerationResult Run(
        IReadOnlyList<int> promptTokens,
        ITokenizer tokenizer,
        int maxTokens,
        int capacity,
        Func<int> prefill,
        Func<int, int> step,
        Func<int> position,
        Func<long> kvBytes,
        Action<string>? onText,
        int endOfTurn = -1,
        CancellationToken cancel = default,
        IReadOnlyList<string>? stopTexts = null,
        int runTokens = -1)
    {
        if (maxTokens < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(maxTokens), $"--max-tokens must be >= 0, got {maxTokens}");
        }

        if (promptTokens.Count == 0)
        {
            throw new ArgumentException("the prompt has no tokens (not even BOS)");
        }

        if (promptTokens.Count > capacity)
        {
            throw new ArgumentException($"the prompt has {promptTokens.Count} tokens but the context holds {capacity}");
        }

        var sw = Stopwatch.StartNew();
        int next = prefill();
        double prefillSeconds = sw.Elapsed.TotalSeconds;
        var streaming = new StreamingTextDecoder(tokenizer, promptTokens[^1]);
        var text = new StringBuilder();
        var generated = new List<int>();
        string reason = "max_tokens";
        int decodeSteps = 0;
        sw.Restart();
        while (generated.Count < maxTokens)
        {
            if (next == tokenizer.EosToken || next == tokenizer.BosToken || (endOfTurn >= 0 && next == endOfTurn))
            {
                reason = "eos";
                break;
            }

            generated.Add(next);
            string piece = streaming.Push(next);
            text.Append(piece);
            onText?.Invoke(piece);
            if (generated.Count >= maxTokens)
            {
                break;
            }

            if (stopTexts is { Count: > 0 } && EndsWithAny(text, stopTexts))
            {
                reason = "stop_text";
                break;
            }

            if (cancel.IsCancellationRequested)
            {
                reason = "cancelled";
                break;
            }

            if (position() >= capacity)
            {
                reason = "context_full";
                break;
            }

            next = step(next);
            decodeSteps++;
        }

        double decodeSeconds = sw.Elapsed.TotalSeconds;
        return new GenerationResult(
            promptTokens,
            generated,
            text.ToString(),
            reason,
            (runTokens < 0 ? promptTokens.Count : runTokens) / Math.Max(prefillSeconds, 1e-9),
            decodeSteps == 0 ? 0 : decodeSteps / Math.Max(decodeSeconds, 1e-9),
            kvBytes())
        {
            PrefillTokens = runTokens < 0 ? promptTokens.Count : runTokens,
            PrefillSeconds = prefillSeconds,
            DecodeSteps = decodeSteps,
            DecodeSeconds = decodeSeconds,
        };
    }

    private static bool EndsWithAny(StringBuilder text, IReadOnlyList<string> stops)
    {
        foreach (var stop in stops)
        {
            if (stop.Length == 0 || text.Length < stop.Length)
            {
                continue;
            }

            // Compared in place: no string per token.
            int i = 0, start = text.Length - stop.Length;
            while (i < stop.Length && text[start + i] == stop[i])
            {
                i++;
            }

            if (i == stop.Length)
            {
                return true;
            }
        }

        return false;
    }
}
