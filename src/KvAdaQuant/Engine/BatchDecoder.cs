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
    private int[] _counts = [];
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
        int n = sessions.Count;
        if (n == 0)
        {
            throw new ArgumentException("no sessions to decode", nameof(sessions));
        }

        if (tokens.Length != n)
        {
            throw new ArgumentException($"{tokens.Length} tokens for {n} sessions; each session takes one", nameof(tokens));
        }

        int vocab = Transformer.Config.VocabSize;
        if (_counts.Length < n)
        {
            _counts = new int[n];
            Array.Fill(_counts, 1);
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
            // One sequence: the single-token decode (its own logits buffer, no copy).
            sessions[0].Decode(tokens[0]);
            return;
        }

        try
        {
            foreach (var s in sessions)
            {
                _caches.Add(s.Cache);
            }

            Transformer.Forward(tokens, _counts.AsSpan(0, n), _caches, _logits);
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
