namespace KvAdaQuant.Formats;

/// <summary>A model, tokenizer or data file is malformed; the message names the file and what is wrong.</summary>
public sealed class ModelFormatException : Exception
{
    /// <summary>Creates the error for <paramref name="file"/>.</summary>
    public ModelFormatException(string file, string problem)
        : base($"{file}: {problem}")
    {
        File = file;
        Problem = problem;
    }

    /// <summary>The file at fault.</summary>
    public string File { get; }

    /// <summary>What is wrong with it.</summary>
    public string Problem { get; }
}
