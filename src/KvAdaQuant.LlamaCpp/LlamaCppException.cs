namespace KvAdaQuant.LlamaCpp;

/// <summary>llama.cpp (through LLamaSharp) could not load, could not open a file, or refused a request.</summary>
public sealed class LlamaCppException : Exception
{
    /// <summary>Creates the exception.</summary>
    public LlamaCppException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with its cause.</summary>
    public LlamaCppException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
