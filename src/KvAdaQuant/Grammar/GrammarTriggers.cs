using System.Text;

namespace KvAdaQuant.Grammar;

/// <summary>
/// What wakes a lazy <see cref="GrammarConstraint"/> (llama.cpp's lazy grammar): the generation is free until the text
/// contains one of <see cref="Words"/> (the grammar then constrains the text from the word's first byte on: the word is the
/// start of a sentence of the grammar) or one of <see cref="Tokens"/> is generated (the token's text is the start of the
/// sentence, as in llama.cpp; a control token such as Llama 3's <c>&lt;|python_tag|&gt;</c> has none, so the grammar starts
/// after it). With <see cref="AtStart"/> a trigger counts only where the text before it is whitespace (none, or spaces, tabs
/// and line breaks).
/// </summary>
/// <param name="Words">Trigger words (non-empty).</param>
/// <param name="Tokens">Trigger token ids.</param>
/// <param name="AtStart">Whether a trigger counts only at the start of the text (after whitespace).</param>
public sealed record GrammarTriggers(IReadOnlyList<string> Words, IReadOnlyList<int> Tokens, bool AtStart = false)
{
    /// <summary>Throws where a word is empty or a token negative; returns the words as UTF-8.</summary>
    internal byte[][] WordBytes()
    {
        ArgumentNullException.ThrowIfNull(Words);
        ArgumentNullException.ThrowIfNull(Tokens);
        if (Words.Count == 0 && Tokens.Count == 0)
        {
            throw new ArgumentException("a lazy grammar needs at least one trigger word or token");
        }

        foreach (int t in Tokens)
        {
            if (t < 0)
            {
                throw new ArgumentException($"a grammar trigger token must be a token id (>= 0), got {t}");
            }
        }

        return [.. Words.Select(w => string.IsNullOrEmpty(w) ? throw new ArgumentException("a grammar trigger word must not be empty") : Encoding.UTF8.GetBytes(w))];
    }
}
