namespace KvAdaQuant.LlamaCpp;

/// <summary>Which native llama.cpp build was loaded.</summary>
/// <param name="LibraryPath">Path of the loaded <c>libllama.so</c> (its folder names the variant, e.g. <c>avx512</c>).</param>
/// <param name="SystemInfo">llama.cpp's <c>llama_print_system_info()</c> line.</param>
/// <param name="Error">Why it could not load, or null.</param>
public sealed record LlamaCppRuntimeInfo(string LibraryPath, string SystemInfo, string? Error)
{
    /// <summary>The variant folder: <c>avx512</c>, <c>avx2</c>, <c>avx</c>, <c>noavx</c>, or empty.</summary>
    public string Variant => LibraryPath.Length == 0 ? string.Empty : Path.GetFileName(Path.GetDirectoryName(LibraryPath)) ?? string.Empty;
}
