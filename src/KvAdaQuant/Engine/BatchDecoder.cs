using KvAdaQuant.KvCache;

namespace KvAdaQuant.Engine;

/// <summary>
/// Decode steps of several sequences in one forward pass each (llama.cpp's parallel sequences, llama-batched-bench): every
/// session in a step takes one token and its <see cref="InferenceSession.Logits"/> become that token's. The weights are
/// read once per step for all of them, so on a memory-bound decode N sequences cost far less than N steps; each sequence
/// appends to and attends over its own cache, and gets the logits <see cref="InferenceSession.Decode"/> would give it
/// wherever the weight products give every token the same bits in any batch (see
/// <see cref="Transformer.Forward(ReadOnlySpan{int}, ReadOnlySpan{int}, IReadOnlyList{IKvCache}, Span{float})"/>).
/// Buffers are kept between steps: no allocation per step once the largest batch has been seen.
/// </summary>
public sealed class BatchDecoder(Transformer transformer)
{
    // A list, not an array segment: passed as IReadOnlyList it is not boxed each step.
    private readonly List<IKvCache> _caches = [];
    private int[] _ones = [];
    private float[] _logits = [];

    /// <summary>The engine every session of a step must run on.</summary>
    public Transformer Transformer { get; } = transformer ?? throw new ArgumentNullException(nameof(transformer));

    /// <summary>
    /// One decode step: <paramref name="sessions"/>[i] takes <paramref name="tokens"/>[i]. The sessions must run on
    /// <see cref="Transformer"/> and be distinct; a session whose cache is full fails the step by name before any cache
    /// changes.
    /// </summary>
    public void Decode(IReadOnlyList<InferenceSession> sessions, ReadOnlySpan<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(sessions);
        if (tokens.Length != sessions.Count)
        {
            throw new ArgumentException($"{tokens.Length} tokens for {sessions.Count} sessions; each session takes one", nameof(tokens));
        }

        if (_ones.Length < sessions.Count)
        {
            _ones = new int[sessions.Count];
            Array.Fill(_ones, 1);
        }

        Step(sessions, _ones.AsSpan(0, sessions.Count), tokens);
    }

    /// <summary>
    /// One forward pass over several sessions' tokens (llama-server's continuous batching: decode tokens and prompt chunks
    /// in one batch): <paramref name="sessions"/>[i] takes the next <paramref name="counts"/>[i] of
    /// <paramref name="tokens"/>, and its <see cref="InferenceSession.Logits"/> become those of its last one. A prompt chunk
    /// gets the bits a prefill that reaches the same chunk gets (its <see cref="InferenceSession.BatchSize"/> batches), as
    /// long as the caller cuts the prompt where the session would. The sessions must run on <see cref="Transformer"/> and be
    /// distinct; a session whose cache cannot take its tokens fails the step by name before any cache changes.
    /// </summary>
    public void Step(IReadOnlyList<InferenceSession> sessions, ReadOnlySpan<int> counts, ReadOnlySpan<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(sessions);
        int n = sessions.Count;
        if (n == 0)
        {
            throw new ArgumentException("no sessions to run", nameof(sessions));
        }

        if (counts.Length != n)
        {
            throw new ArgumentException($"{counts.Length} token counts for {n} sessions", nameof(counts));
        }

        int vocab = Transformer.Config.VocabSize;
        if (_logits.Length < n * vocab)
        {
            _logits = new float[n * vocab];
        }

        for (int i = 0; i < n; i++)
        {
            var s = sessions[i] ?? throw new ArgumentNullException(nameof(sessions), $"session {i} is null");
            if (!ReferenceEquals(s.Transformer, Transformer))
            {
                throw new ArgumentException($"session {i} runs on another Transformer than this decoder's; a batch needs one engine", nameof(sessions));
            }
        }

        if (n == 1)
        {
            // One sequence: its own forward pass (its own logits buffer, no copy).
            if (counts[0] != tokens.Length)
            {
                throw new ArgumentException($"the sessions' counts add up to {counts[0]} tokens but {tokens.Length} were given", nameof(tokens));
            }

            sessions[0].Forward(tokens);
            return;
        }

        try
        {
            foreach (var s in sessions)
            {
                _caches.Add(s.Cache);
            }

            Transformer.Forward(tokens, counts, _caches, _logits);
        }
        finally
        {
            _caches.Clear();
        }

        for (int i = 0; i < n; i++)
        {
            sessions[i].SetLogits(_logits.AsSpan(i * vocab, vocab));
        }
    }
}
