namespace KvAdaQuant.Bench;

/// <summary>
/// The arguments after <c>--attention-min-probe</c>: a cache spec, then optionally a context (positions, default 32,768),
/// <c>--resident</c> and <c>--threads N</c> (the whole steps over N threads, default 1), in any order. No BenchmarkDotNet
/// dependency, so the tests compile this file too.
/// </summary>
public sealed record MinProbeArguments(string Kv, int Context, bool Resident, int Threads = 1)
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

        int context = DefaultContext, threads = 1;
        bool resident = false;
        for (int i = 1; i < args.Count; i++)
        {
            string a = args[i];
            if (a == "--resident")
            {
                resident = true;
            }
            else if (a == "--threads")
            {
                if (i + 1 >= args.Count || !int.TryParse(args[i + 1], out threads) || threads < 1)
                {
                    throw new ArgumentException($"--attention-min-probe: --threads needs a positive whole number of threads{(i + 1 < args.Count ? $", got '{args[i + 1]}'" : string.Empty)}");
                }

                i++;
            }
            else if (int.TryParse(a, out int c) && c > 0)
            {
                context = c;
            }
            else
            {
                throw new ArgumentException($"--attention-min-probe: '{a}' is neither a context (a positive whole number of positions), --resident nor --threads N");
            }
        }

        return new MinProbeArguments(args[0], context, resident, threads);
    }
}
