namespace KvAdaQuant.Engine.Speculative;

/// <summary>
/// Proposes the tokens that may follow a sequence, for speculative decoding (<see cref="SpeculativeDecoding"/>): the
/// target model then runs them as one batch and keeps those its own sampler draws too. A source only guesses; a wrong
/// guess costs time, never a different text.
/// </summary>
public interface IDraftSource
{
    /// <summary>
    /// Writes up to <c>draft.Length</c> tokens guessed to follow <paramref name="sequence"/> (the prompt and every token
    /// generated so far, its last the token about to be fed) into <paramref name="draft"/> and returns how many (0: no
    /// guess; the step then decodes one token as without speculation).
    /// </summary>
    int Draft(ReadOnlySpan<int> sequence, Span<int> draft);
}
