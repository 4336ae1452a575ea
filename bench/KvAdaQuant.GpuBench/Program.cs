using KvAdaQuant.GpuBench;

// kvaq-gpubench verify|bench|all [--out DIR] [--torch FILE] [--cubin FILE] [--iters N]
return GpuBenchCommand.Run(args);
