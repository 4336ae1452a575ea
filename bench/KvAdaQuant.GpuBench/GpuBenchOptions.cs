namespace KvAdaQuant.GpuBench;

/// <summary>Command-line options of the GPU benchmark.</summary>
internal sealed record GpuBenchOptions(string Mode, string OutDir, string? TorchJson, string? Cubin, int Iterations, bool SweepSplits, int HeadDim = 128)
{
    public static GpuBenchOptions Parse(string[] args)
    {
        string mode = args.Length > 0 ? args[0] : "all";
        if (mode is not ("verify" or "bench" or "all" or "profile"))
        {
            throw new ArgumentException($"mode: '{mode}' is not verify, bench, all or profile.");
        }

        string outDir = ".";
        string? torch = null, cubin = null;
        int iters = 200;
        bool sweep = true;
        int headDim = 128;
        for (int i = 1; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]}: missing value.");
            switch (args[i])
            {
                case "--out": outDir = Next(); break;
                case "--torch": torch = Next(); break;
                case "--cubin": cubin = Next(); break;
                case "--iters": iters = int.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                case "--splits":
                    sweep = Next() switch
                    {
                        "auto" => false,
                        "all" => true,
                        string other => throw new ArgumentException($"--splits: '{other}' is not auto or all."),
                    };
                    break;
                case "--head-dim":
                    headDim = Next() switch
                    {
                        "128" => 128,
                        "64" => 64,
                        string other => throw new ArgumentException($"--head-dim: '{other}' is not 64 or 128."),
                    };
                    break;
                default: throw new ArgumentException($"{args[i]}: unknown option.");
            }
        }

        return new GpuBenchOptions(mode, outDir, torch, cubin, iters, sweep, headDim);
    }
}
