namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// Supplies rows of a tensor being written: fills <paramref name="destination"/> with
/// <paramref name="rowCount"/> rows starting at <paramref name="firstRow"/> (row length = the tensor's ne[0]).
/// Called from several threads at once for different rows, so it must be thread-safe.
/// </summary>
public delegate void GgufRowSource(long firstRow, int rowCount, Span<float> destination);
