using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine.Speculative;

/// <summary>
/// A smaller model of the same vocabulary that guesses the target's next tokens (llama.cpp's <c>--model-draft</c>,
/// transformers' <c>assistant_model</c>): greedily, one decode step of its own per guess, and it stops guessing where its
/// most likely token's probability falls below <see cref="MinProbability"/> (llama.cpp's <c>--draft-p-min</c>). Its own KV
/// cache follows the sequence: before each draft it keeps the longest prefix it shares with the sequence and runs the
/// rest, so kept guesses are not run twice.
/// </summary>
public sealed class DraftModel : IDraftSource
{
    private readonly InferenceSession _session;
    private readonly List<int> _cached = [];
    private float[] _probs = [];

    /// <summary>Creates a draft source that runs on <paramref name="session"/> (its cache must be cut back exactly: fp32, fp16 or per-token groups without a window).</summary>
    /// <param name="session">The draft model's session; the draft owns its state from now on.</param>
    /// <param name="minProbability">Stop guessing where the draft's top token is less likely than this, in [0, 1].</param>
    public DraftModel(InferenceSession session, float minProbability = DefaultMinProbability)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (!(minProbability is >= 0f and <= 1f))
        {
            throw new ArgumentOutOfRangeException(nameof(minProbability), $"--draft-p-min must be in [0, 1], got {minProbability}");
        }

        if (!InferenceSession.IsBatchInvariant(session.Cache))
        {
            throw new ArgumentException($"the draft model's KV cache {session.Cache.Description} cannot be cut back exactly; give it fp16, fp32 or a per-token spec without a residual window");
        }

        _session = session;
        MinProbability = minProbability;
        session.Reset();
    }

    /// <summary>Default <see cref="MinProbability"/>: 0.75, llama.cpp's.</summary>
    public const float DefaultMinProbability = 0.75f;

    /// <summary>The draft's top token must be at least this likely to be guessed.</summary>
    public float MinProbability { get; }

    /// <summary>
    /// Throws, naming the first difference, unless <paramref name="draft"/> writes every token of
    /// <paramref name="target"/> with the same bytes and has the same size, BOS and EOS (guesses are token ids, so the two
    /// vocabularies must be one). A token that one side prints as nothing (a control or unknown token there) is not
    /// compared: llama2.c's tokenizer prints its <c>&lt;unk&gt;</c>, <c>&lt;s&gt;</c> and <c>&lt;/s&gt;</c> as text where
    /// the same vocabulary in GGUF marks them special and prints nothing, so a model re-quantized into GGUF still drafts for
    /// its llama2.c original (llama.cpp's check likewise skips its first five ids). A mismatch could only cost guesses,
    /// never change the text: the target's sampler decides every token.
    /// </summary>
    public static void CheckSameVocabulary(ITokenizer target, ITokenizer draft)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(draft);
        if (target.VocabSize != draft.VocabSize)
        {
            throw new ArgumentException($"the draft model's vocabulary has {draft.VocabSize} tokens and the target's {target.VocabSize}: a draft model must share the target's tokenizer");
        }

        if (target.BosToken != draft.BosToken || target.EosToken != draft.EosToken)
        {
            throw new ArgumentException($"the draft model's BOS/EOS are {draft.BosToken}/{draft.EosToken} and the target's {target.BosToken}/{target.EosToken}: a draft model must share the target's tokenizer");
        }

        for (int t = 0; t < target.VocabSize; t++)
        {
            var a = target.DecodeBytes(-1, t);
            var b = draft.DecodeBytes(-1, t);
            if (a.Length > 0 && b.Length > 0 && !a.AsSpan().SequenceEqual(b))
            {
                throw new ArgumentException($"token {t} is '{Piece(target, t)}' in the target's vocabulary and '{Piece(draft, t)}' in the draft model's: a draft model must share the target's tokenizer");
            }
        }
    }

    /// <inheritdoc/>
    public int Draft(ReadOnlySpan<int> sequence, Span<int> draft)
    {
        if (sequence.IsEmpty || draft.IsEmpty)
        {
            return 0;
        }

        // Keep what the draft's cache shares with the sequence, less at least the last token (its logits are needed).
        int keep = 0;
        int limit = Math.Min(_cached.Count, sequence.Length - 1);
        while (keep < limit && _cached[keep] == sequence[keep])
        {
            keep++;
        }

        // The sequence, then a decode step for each guess but the last.
        int room = _session.Cache.Layout.Capacity - sequence.Length + 1;
        if (room < 1)
        {
            return 0;
        }

        _session.Truncate(keep);
        _cached.RemoveRange(keep, _cached.Count - keep);

        var logits = _session.Prefill(sequence[keep..]);
        foreach (int t in sequence[keep..])
        {
            _cached.Add(t);
        }

        int count = 0;
        int most = Math.Min(draft.Length, room);
        while (count < most)
        {
            int best = Sampler.ArgMax(logits);
            if (MinProbability > 0f && TopProbability(logits, best) < MinProbability)
            {
                break;
            }

            draft[count++] = best;
            if (count < most)
            {
                logits = _session.Decode(best);
                _cached.Add(best);
            }
        }

        return count;
    }

    // softmax(logits)[best], with best the largest logit.
    private float TopProbability(ReadOnlySpan<float> logits, int best)
    {
        if (_probs.Length < logits.Length)
        {
            _probs = new float[logits.Length];
        }

        var p = _probs.AsSpan(0, logits.Length);
        System.Numerics.Tensors.TensorPrimitives.Subtract(logits, logits[best], p);
        System.Numerics.Tensors.TensorPrimitives.Exp(p, p);
        return 1f / System.Numerics.Tensors.TensorPrimitives.Sum(p);
    }

    private static string Piece(ITokenizer tokenizer, int token) =>
        System.Text.Encoding.UTF8.GetString(tokenizer.DecodeBytes(-1, token)).Replace("\n", "\\n", StringComparison.Ordinal);
}
