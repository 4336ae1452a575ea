using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// One request after another of a server over a loaded model: <see cref="Generator"/>'s run (the prompt, then sample and
/// decode), which also stops at a chat template's end-of-turn token and when a <see cref="CancellationToken"/> is signalled
/// (a client gone, a stop text found by the caller, a shutdown), and which can keep what the cache holds when the next
/// prompt starts with it (llama-server's <c>cache_prompt</c>): only the rest of the prompt is then run. The tokens the
/// cache holds are <see cref="Tokens"/>.
/// </summary>
public sealed class RequestGenerator
{
    private readonly IDecodeSession _session;
    private readonly ITokenizer _tokenizer;
    private readonly List<int> _tokens = [];

    /// <summary>Creates a generator over the CPU engine's <paramref name="session"/>, whose cache it clears.</summary>
    public RequestGenerator(InferenceSession session, ITokenizer tokenizer)
        : this((IDecodeSession)session, tokenizer)
    {
    }

    /// <summary>
    /// Creates a generator over any <see cref="IDecodeSession"/> (the CPU engine's <see cref="InferenceSession"/>, the GPU's
    /// <c>CudaDecodeSession</c>), whose cache it clears; sampling runs on the host.
    /// </summary>
    public RequestGenerator(IDecodeSession session, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(tokenizer);
        _session = session;
        _tokenizer = tokenizer;
        _session.Reset();
    }

    /// <summary>
    /// Speculative decoding for every request (<see cref="Generator.Speculative"/>), or null (the default); the CPU
    /// engine's sessions only.
    /// </summary>
    public Speculative.SpeculativeDecoding? Speculative { get; set; }

    /// <summary>The session it runs on.</summary>
    public IDecodeSession Session => _session;

    /// <summary>The tokens the cache holds, in order (the last run's prompt and the tokens it fed back).</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>Prompt tokens the last run took from the cache instead of running them.</summary>
    public int ReusedTokens { get; private set; }

    /// <summary>
    /// How many of <paramref name="promptTokens"/> the cache can serve: the longest common prefix of <see cref="Tokens"/>
    /// and the prompt, shorter than the prompt (its last token is always run, for its logits), when the cache can be cut
    /// back to it exactly (all of the cache when the prompt extends it; fewer positions only when
    /// <see cref="IDecodeSession.CanTruncate"/>: FP32/FP16 caches always; on the CPU quantized ones where the kept prefix is
    /// held as appending it alone holds it, on the GPU while the positions after the cut are still in their FP16 window),
    /// as llama-server keeps a request's common prefix; else 0.
    /// </summary>
    public int ReusablePrefix(IReadOnlyList<int> promptTokens)
    {
        if (_tokens.Count == 0 || _session.Position != _tokens.Count)
        {
            return 0;
        }

        int common = 0, limit = Math.Min(_tokens.Count, promptTokens.Count - 1);
        while (common < limit && _tokens[common] == promptTokens[common])
        {
            common++;
        }

        if (common == _tokens.Count)
        {
            return common;
        }

        return common > 0 && _session.CanTruncate(common) ? common : 0;
    }

    /// <summary>
    /// Generates up to <paramref name="maxTokens"/> tokens after <paramref name="promptTokens"/> (BOS included), streaming
    /// text to <paramref name="onText"/>. Stops at EOS or <paramref name="endOfTurn"/> (stop reason <c>eos</c>; -1 for none),
    /// the token limit (<c>max_tokens</c>), a full context (<c>context_full</c>), or once <paramref name="cancel"/> is
    /// signalled (<c>cancelled</c>, after the token being streamed). With <paramref name="reusePrefix"/> the tokens the cache
    /// holds from the previous run are kept when the prompt starts with them (<see cref="ReusablePrefix"/>); otherwise, or
    /// when it does not, the cache is cleared first. The result's <c>PromptTokens</c> is the whole prompt; its prefill speed
    /// counts the tokens run. A prompt longer than the context is an <see cref="ArgumentException"/> before anything runs.
    /// <paramref name="logprobs"/> records log-probabilities (<see cref="GenerationResult.Logprobs"/>); asking for the
    /// prompt's runs the whole prompt, whatever the cache holds.
    /// </summary>
    public GenerationResult Generate(
        IReadOnlyList<int> promptTokens,
        int maxTokens,
        Sampler sampler,
        Action<string>? onText,
        int endOfTurn = -1,
        CancellationToken cancel = default,
        bool reusePrefix = false,
        LogprobOptions? logprobs = null)
    {
        if (promptTokens.Count > _session.Capacity)
        {
            throw new ArgumentException($"the prompt has {promptTokens.Count} tokens but the context holds {_session.Capacity}");
        }

        int reuse = reusePrefix && logprobs is not { Prompt: true } ? ReusablePrefix(promptTokens) : 0;
        ReusedTokens = reuse;
        try
        {
            if (reuse > 0 && reuse < _tokens.Count)
            {
                // The common prefix of a prompt that leaves the cached tokens: cut the cache back to it.
                _session.Truncate(reuse);
            }

            var result = new Generator(_session, _tokenizer) { Speculative = Speculative }.Generate(
                promptTokens, reuse, maxTokens, sampler, onText, logprobs: logprobs, endOfTurn: endOfTurn, cancel: cancel);

            // The cache now holds the prompt and the tokens fed back (all but the last one sampled).
            _tokens.Clear();
            _tokens.AddRange(promptTokens);
            _tokens.AddRange(result.Tokens.Take(_session.Position - promptTokens.Count));
            return result;
        }
        catch
        {
            // The cache may hold part of the run: start the next one over.
            _session.Reset();
            _tokens.Clear();
            throw;
        }
    }

    /// <summary>
    /// Saves what the cache holds, with <see cref="Tokens"/>, to a state file at <paramref name="path"/>
    /// (<see cref="SessionStateFile.SaveFile"/>, atomically; llama-server's slot save). Returns the tokens saved and the
    /// file's bytes. Only between runs; a <see cref="NotSupportedException"/> where the session's cache is not the CPU
    /// engine's (<see cref="IDecodeSession.StateSession"/>).
    /// </summary>
    public (int Tokens, long Bytes) SaveState(string path)
    {
        var session = StateSessionOrThrow("saved");
        if (session.Position != _tokens.Count)
        {
            throw new InvalidOperationException($"the cache holds {session.Position} positions but {_tokens.Count} tokens are known for them");
        }

        return (_tokens.Count, SessionStateFile.SaveFile(path, session, _tokens));
    }

    /// <summary>
    /// Restores a state file (<see cref="SessionStateFile.LoadFile"/>: the same model and KV plan, no longer than the
    /// context; a refused file leaves the cache and <see cref="Tokens"/> as they were): the cache then holds the saved
    /// tokens, which the next run's prompt can take from it (<see cref="ReusablePrefix"/>). Returns the tokens restored
    /// and the bytes read.
    /// </summary>
    public (int Tokens, long Bytes) RestoreState(string path)
    {
        var state = SessionStateFile.LoadFile(path, StateSessionOrThrow("restored"));
        _tokens.Clear();
        _tokens.AddRange(state.Tokens);
        ReusedTokens = 0;
        return (_tokens.Count, state.Bytes);
    }

    /// <summary>
    /// The embedding of <paramref name="tokens"/> (<see cref="EmbeddingCapture"/>: the final hidden states, pooled, to unit
    /// length when <paramref name="normalize"/>), run from an empty cache, which then holds them (a later prompt that
    /// starts with them takes them from it). The CPU engine's sessions only (<see cref="NotSupportedException"/> elsewhere).
    /// </summary>
    public float[] Embed(IReadOnlyList<int> tokens, EmbeddingPooling pooling, bool normalize = true)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Count == 0 || tokens.Count > _session.Capacity)
        {
            throw new ArgumentException($"an embedding takes 1 to {_session.Capacity} tokens (the context), got {tokens.Count}");
        }

        var transformer = (_session.StateSession ?? throw new NotSupportedException($"embeddings run on the CPU engine; the KV cache is on {_session.Device}")).Transformer;
        var capture = new EmbeddingCapture(transformer, pooling);
        _session.Reset();
        _tokens.Clear();
        ReusedTokens = 0;
        try
        {
            _session.Prefill([.. tokens], capture);
        }
        catch
        {
            _session.Reset();
            throw;
        }

        _tokens.AddRange(tokens);
        return capture.Embedding(normalize);
    }

    /// <summary>Clears the cache (llama-server's slot erase); returns the tokens it held.</summary>
    public int Erase()
    {
        int held = _tokens.Count;
        _session.Reset();
        _tokens.Clear();
        ReusedTokens = 0;
        return held;
    }

    private InferenceSession StateSessionOrThrow(string verb) => _session.StateSession
        ?? throw new NotSupportedException($"the KV cache is on {_session.Device}; it cannot be {verb}: state files hold the CPU engine's caches");
}
