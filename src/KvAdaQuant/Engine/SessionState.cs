namespace KvAdaQuant.Engine;

/// <summary>What <see cref="SessionStateFile.Load"/> restored besides the cache and the logits.</summary>
/// <param name="Tokens">The tokens the cache holds, in order.</param>
/// <param name="ApplicationData">The text the saver attached (chat: the conversation as JSON; empty otherwise).</param>
/// <param name="Model">The file name of the model that saved it.</param>
/// <param name="KvDescription">The saved cache's description (e.g. "k4v2").</param>
/// <param name="Bytes">Bytes read, checksum included.</param>
public sealed record SessionState(IReadOnlyList<int> Tokens, string ApplicationData, string Model, string KvDescription, long Bytes);
