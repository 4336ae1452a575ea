namespace KvAdaQuant.Bench;

/// <summary>
/// The arguments after <c>--attention-min-probe</c>: a cache spec, then optionally a context (positions, default 32,768)
/// and <c>--resident</c>, in any order. No BenchmarkDotNet dependency, so the tests compile this file too.
/// </summary>
public sealed record MinProbeArguments(string Kv, int Context, bool Resident)
{
    /// <summary>Default context: the issue-6 target's 32k.</summary>
    public const int DefaultContext = 32768;

    /// <summary>Parses the arguments after the flag; throws <see cref="ArgumentException"/> naming what was wrong.</summary>
    public static MinProbeArguments Parse(IReadOnlyList<string> args)
    {
        if (args.Count == 0 || args[0].StartsWith('-'))
        {
            throw new ArgumentException("--attention-min-probe: expected a cache spec (e.g. k4v2) first");
        }

        int context = DefaultContext;
        bool resident = false;
        foreach (string a in args.Skip(1))
        {
            if (a == "--resident")
            {
                resident = true;
            }
            else if (int.TryParse(a, out int c) && c > 0)
            {
                context = c;
            }
            else
            {
                throw new ArgumentException($"--attention-min-probe: '{a}' is neither a context (a positive whole number of positions) nor --resident");
            }
        }

        return new MinProbeArguments(args[0], context, resident);
    }
}
