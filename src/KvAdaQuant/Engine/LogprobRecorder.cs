namespace KvAdaQuant.Engine;

/// <summary>
/// The log-probabilities one generation records (<see cref="LogprobOptions"/>): the prompt's from a prefill that hands
/// out every position's logits, and each sampled token's from the logits it was sampled from. A run without options
/// records nothing and prefills as usual.
/// </summary>
internal sealed class LogprobRecorder
{
    private readonly LogprobOptions? _options;
    private readonly List<TokenLogprob>? _generated;
    private List<TokenLogprob>? _prompt;

    public LogprobRecorder(LogprobOptions? options)
    {
        if (options is { Top: < 0 })
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"the number of top log-probabilities must be >= 0, got {options.Top}");
        }

        _options = options;
        _generated = options is null ? null : [];
    }

    /// <summary>Whether the prompt's log-probabilities are asked for (the whole prompt must then be run).</summary>
    public bool Prompt => _options is { Prompt: true };

    /// <summary>
    /// Prefills <paramref name="tokens"/> (<paramref name="offset"/> prompt tokens before them already cached) and returns
    /// the last logits; with <see cref="Prompt"/>, records the log-probability of each next prompt token.
    /// </summary>
    public ReadOnlySpan<float> Prefill(IDecodeSession session, int[] tokens, int offset)
    {
        if (!Prompt)
        {
            return session.Prefill(tokens);
        }

        if (offset != 0)
        {
            throw new ArgumentException($"the prompt's log-probabilities need the whole prompt run, but {offset} of its tokens came from the cache");
        }

        var prompt = new List<TokenLogprob>(Math.Max(tokens.Length - 1, 0));
        int top = _options!.Top;
        var result = session.Prefill(tokens, (i, logits) =>
        {
            if (i + 1 < tokens.Length)
            {
                prompt.Add(TokenLogprobs.Of(logits, tokens[i + 1], top));
            }
        });
        _prompt = prompt;
        _options.OnPrompt?.Invoke(prompt);
        return result;
    }

    /// <summary>Samples from <paramref name="logits"/> and records the sampled token's entry.</summary>
    public int Sample(Sampler sampler, ReadOnlySpan<float> logits, ReadOnlySpan<int> sequence)
    {
        int token = sampler.Sample(logits, sequence);
        if (_generated is not null)
        {
            var entry = TokenLogprobs.Of(logits, token, _options!.Top);
            _generated.Add(entry);
            _options.OnToken?.Invoke(entry);
        }

        return token;
    }

    /// <summary>The result with the recorded entries: one per generated token (the last sample, an end token or one past the limit, dropped).</summary>
    public GenerationResult Complete(GenerationResult result) => _generated is null
        ? result
        : result with { Logprobs = _generated.Take(result.Tokens.Count).ToArray(), PromptLogprobs = _prompt };
}
