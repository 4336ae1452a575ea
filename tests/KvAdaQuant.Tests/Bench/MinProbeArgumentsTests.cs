using KvAdaQuant.Bench;

namespace KvAdaQuant.Tests.Bench;

/// <summary>The benchmark's <c>--attention-min-probe</c> arguments: defaults, context, --resident, and clear errors.</summary>
public class MinProbeArgumentsTests
{
    [Fact]
    public void SpecAloneMeans32kStreamed() =>
        Assert.Equal(new MinProbeArguments("k4v2", 32768, false), MinProbeArguments.Parse(["k4v2"]));

    [Fact]
    public void ContextAndResidentInEitherOrder()
    {
        Assert.Equal(new MinProbeArguments("k4v2:g64", 2048, true), MinProbeArguments.Parse(["k4v2:g64", "2048", "--resident"]));
        Assert.Equal(new MinProbeArguments("k4v2", 1024, true), MinProbeArguments.Parse(["k4v2", "--resident", "1024"]));
    }

    [Fact]
    public void ThreadsTakeTheNextArgument()
    {
        Assert.Equal(new MinProbeArguments("k4v2", 2048, true, 2), MinProbeArguments.Parse(["k4v2", "--threads", "2", "2048", "--resident"]));
        Assert.Equal(1, MinProbeArguments.Parse(["k4v2"]).Threads);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("x")]
    public void ABadThreadCountIsNamed(string bad)
    {
        var e = Assert.Throws<ArgumentException>(() => MinProbeArguments.Parse(["k4v2", "--threads", bad]));
        Assert.Contains($"--threads needs a positive whole number of threads, got '{bad}'", e.Message);
        Assert.Contains("--threads needs", Assert.Throws<ArgumentException>(() => MinProbeArguments.Parse(["k4v2", "--threads"])).Message);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("0")]
    [InlineData("-5")]
    [InlineData("--resdent")]
    public void AnArgumentThatIsNeitherIsNamed(string bad)
    {
        var e = Assert.Throws<ArgumentException>(() => MinProbeArguments.Parse(["k4v2", bad]));
        Assert.Contains($"'{bad}'", e.Message);
        Assert.Contains("--attention-min-probe", e.Message);
    }

    [Fact]
    public void MissingSpecIsAnError()
    {
        Assert.Contains("cache spec", Assert.Throws<ArgumentException>(() => MinProbeArguments.Parse([])).Message);
        Assert.Contains("cache spec", Assert.Throws<ArgumentException>(() => MinProbeArguments.Parse(["--resident"])).Message);
    }
}
