using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.Formats;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// Calibration tokens for allocation: <c>sampled</c> (the default) is text sampled from the model itself with seed
/// <see cref="Seed"/>, which differs from the evaluation's default seed (42), so calibration and evaluation text are
/// disjoint; a file contributes its first tokens (choose one disjoint from the evaluation text, e.g. ptb/ptb.valid.txt
/// when evaluating on ptb/ptb.test.txt).
/// </summary>
internal static class CalibrationText
{
    public const ulong Seed = 7;

    /// <summary>Refuses a <c>--calib-tokens</c> outside 8 to the model's context (callers check it before slow work).</summary>
    public static void CheckTokens(int tokens, int contextLength)
    {
        if (tokens < 8 || tokens > contextLength)
        {
            throw new ArgumentException($"--calib-tokens must be in 8..{contextLength}, got {tokens}");
        }
    }

    public static (IReadOnlyList<int> Tokens, string Name) Load(string calib, Transformer transformer, ITokenizer tokenizer, int tokens)
    {
        CheckTokens(tokens, transformer.Config.ContextLength);

        if (calib is "sampled" or "model" or "model-sampled")
        {
            var ids = ModelTextSampler.Sample(transformer, tokenizer, tokens, tokens, Seed);
            return (ids, $"text sampled from the model (seed {Seed})");
        }

        var path = ModelPaths.ResolveData(calib);
        var text = DatasetReader.ReadText(path, tokens * 16);
        var all = tokenizer.Encode(text, addBos: true);
        if (all.Count < tokens)
        {
            throw new ArgumentException($"--calib {path}: only {all.Count} tokens, fewer than --calib-tokens {tokens}");
        }

        return (all.GetRange(0, tokens), path);
    }
}
