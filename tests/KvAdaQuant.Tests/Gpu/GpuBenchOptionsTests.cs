using KvAdaQuant.GpuBench;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>The GPU benchmark's command line (the program itself needs a GPU; its options do not).</summary>
public class GpuBenchOptionsTests
{
    [Fact]
    public void DefaultsAndEveryOptionParse()
    {
        var d = GpuBenchOptions.Parse(["verify"]);
        Assert.Equal(("verify", ".", 128, 200, true), (d.Mode, d.OutDir, d.HeadDim, d.Iterations, d.SweepSplits));
        var o = GpuBenchOptions.Parse(["all", "--out", "r", "--torch", "t.json", "--iters", "50", "--splits", "auto", "--head-dim", "64"]);
        Assert.Equal(("all", "r", "t.json", 50, false, 64), (o.Mode, o.OutDir, o.TorchJson, o.Iterations, o.SweepSplits, o.HeadDim));
    }

    [Theory]
    [InlineData(new[] { "run" }, "mode: 'run'")]
    [InlineData(new[] { "bench", "--head-dim", "96" }, "--head-dim: '96' is not 64 or 128")]
    [InlineData(new[] { "bench", "--splits", "some" }, "--splits: 'some' is not auto or all")]
    [InlineData(new[] { "bench", "--out" }, "--out: missing value")]
    [InlineData(new[] { "bench", "--fast" }, "--fast: unknown option")]
    public void BadArgumentsNameTheOptionAndTheValue(string[] args, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => GpuBenchOptions.Parse(args));
        Assert.Contains(message, e.Message);
    }
}
