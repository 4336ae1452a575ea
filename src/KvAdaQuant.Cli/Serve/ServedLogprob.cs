using KvAdaQuant.Cli.Commands;
using KvAdaQuant.Engine;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// One token's log-probability entry as the server returns it: its text and bytes, where its text starts in the returned
/// text, its log-probability (null for a prompt's first token, which nothing predicts) and the most likely tokens.
/// </summary>
internal sealed record ServedLogprob(string Text, int[] Bytes, int Offset, float? Logprob, IReadOnlyList<(string Text, int[] Bytes, float Logprob)>? Top)
{
    /// <summary>The entry of <paramref name="token"/> after <paramref name="previous"/>, from <paramref name="entry"/> (null: no log-probability).</summary>
    public static ServedLogprob Of(ITokenizer tokenizer, int previous, int token, int offset, TokenLogprob? entry) => new(
        LogprobText.Text(tokenizer, previous, token),
        Ints(LogprobText.Bytes(tokenizer, previous, token)),
        offset,
        entry?.Logprob,
        entry?.Top.Select(t => (LogprobText.Text(tokenizer, previous, t.Token), Ints(LogprobText.Bytes(tokenizer, previous, t.Token)), t.Logprob)).ToArray());

    private static int[] Ints(byte[] bytes) => [.. bytes.Select(b => (int)b)];
}
