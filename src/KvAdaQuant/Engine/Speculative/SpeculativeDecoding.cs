namespace KvAdaQuant.Engine.Speculative;

/// <summary>
/// Speculative decoding for <see cref="Generator"/> (<see cref="Generator.Speculative"/>): at each step a
/// <see cref="Source"/> guesses the next tokens, the target model runs the token being fed and the guesses as one batch
/// (one pass over the weights for them all, which is what a memory-bound decode step pays for one token), and the
/// sampler then draws from the batch's logits position by position for as long as it draws the guessed token. Every token
/// is drawn by the same sampler from the same logits as without speculation (the cache must give the same bits in any
/// batch, <see cref="InferenceSession.IsBatchInvariant"/>), at the moment the generation asks for it, so the text is the
/// same token for token at any temperature and seed; the guesses only decide how many tokens one pass over the weights
/// yields. Positions of refused guesses are cut from the cache before the next batch.
/// </summary>
public sealed class SpeculativeDecoding
{
    /// <summary>Creates the settings.</summary>
    /// <param name="source">What guesses the tokens: <see cref="PromptLookupDraft"/> or a <see cref="DraftModel"/>.</param>
    /// <param name="maxDraft">Most tokens guessed a step, 1..<see cref="MaxDraftLimit"/> (llama.cpp's <c>--draft-max</c>).</param>
    /// <param name="minDraft">Fewer guesses than this are not tried (the step decodes one token), 0..<paramref name="maxDraft"/> (llama.cpp's <c>--draft-min</c>).</param>
    public SpeculativeDecoding(IDraftSource source, int maxDraft = DefaultMaxDraft, int minDraft = 0)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (maxDraft < 1 || maxDraft > MaxDraftLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(maxDraft), $"--draft-max must be in 1..{MaxDraftLimit}, got {maxDraft}");
        }

        if (minDraft < 0 || minDraft > maxDraft)
        {
            throw new ArgumentOutOfRangeException(nameof(minDraft), $"--draft-min must be in 0..{maxDraft} (--draft-max), got {minDraft}");
        }

        Source = source;
        MaxDraft = maxDraft;
        MinDraft = minDraft;
    }

    /// <summary>Default <see cref="MaxDraft"/>.</summary>
    public const int DefaultMaxDraft = 8;

    /// <summary>Largest <see cref="MaxDraft"/>: a batch of 65 positions keeps its logits at 33 MB for a 128k vocabulary.</summary>
    public const int MaxDraftLimit = 64;

    /// <summary>What guesses the tokens.</summary>
    public IDraftSource Source { get; }

    /// <summary>Most tokens guessed a step.</summary>
    public int MaxDraft { get; }

    /// <summary>Fewest tokens worth a batch.</summary>
    public int MinDraft { get; }

    /// <summary>
    /// Whether the number of guesses a step adapts to what the generation measures (true, the default): the time of a
    /// forward pass per number of positions and the share of guesses kept, choosing the count, 0 to
    /// <see cref="MaxDraft"/>, that makes the most tokens a second (<c>DraftLengthPolicy</c>). On a CPU a pass over a few
    /// positions costs little more than one only while the products stay memory-bound, so long drafts can be slower
    /// than none; false always asks the source for <see cref="MaxDraft"/>.
    /// </summary>
    public bool Adaptive { get; init; } = true;
}
