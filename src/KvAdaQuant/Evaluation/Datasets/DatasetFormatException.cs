namespace KvAdaQuant.Evaluation.Datasets;

/// <summary>A dataset file is missing, empty or malformed; the message names the file, the line and what was wrong.</summary>
public sealed class DatasetFormatException : FormatException
{
    /// <summary>Creates the error.</summary>
    public DatasetFormatException(string message)
        : base(message)
    {
    }
}
