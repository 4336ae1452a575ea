using System.Text.Json;
using KvAdaQuant.Cli;
using KvAdaQuant.Cli.Commands;
using KvAdaQuant.Formats;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Analysis;

/// <summary><c>kvaq analyze</c>: options, bad input, files written.</summary>
public class AnalyzeCommandTests
{
    [Fact]
    public void AnalyzeWritesJsonCsvPlotsAndReport()
    {
        using var dir = new TempDir();
        int rc = Program.BuildRoot().Parse(["analyze", "--model", "stories260K", "--data", Fixtures.Path("data", "ptb", "ptb.test.txt"), "--tokens", "64", "--kv-bits", "", "--out", dir.Path, "--threads", "2"]).Invoke();
        Assert.Equal(0, rc);
        foreach (var f in new[] { "analysis.json", "norms.csv", "weights.csv", "singular_values.csv", "report.html", "singular_values.png", "singular_values.svg", "norms_by_layer.png", "norms_by_layer.svg", "channel_peak.png", "channel_peak.svg" })
        {
            Assert.True(File.Exists(dir.File(f)), $"{f} not written");
        }
    }

    [Fact]
    public void PerChannelSymmetricQuantizationIsAnalysed()
    {
        using var dir = new TempDir();
        int rc = Program.BuildRoot().Parse(["analyze", "--model", "stories260K", "--data", Fixtures.Path("data", "ptb", "ptb.test.txt"), "--tokens", "64", "--kv-bits", "2,8", "--axis", "channel", "--group", "16", "--symmetric", "--out", dir.Path, "--threads", "2"]).Invoke();
        Assert.Equal(0, rc);
        var json = File.ReadAllText(dir.File("analysis.json"));
        Assert.Contains(":g16:pc:sym:", json);
    }

    [Fact]
    public void RotatedQuantizationIsAnalysedAndChangesTheErrors()
    {
        string[] Args(string dir, bool rotate) =>
            ["analyze", "--model", "stories260K", "--data", Fixtures.Path("data", "ptb", "ptb.test.txt"), "--tokens", "64", "--kv-bits", "2", "--out", dir, "--threads", "2", .. rotate ? new[] { "--rotate" } : []];
        using var plain = new TempDir();
        using var rotated = new TempDir();
        Assert.Equal(0, Program.BuildRoot().Parse(Args(plain.Path, false)).Invoke());
        Assert.Equal(0, Program.BuildRoot().Parse(Args(rotated.Path, true)).Invoke());
        string a = File.ReadAllText(plain.File("analysis.json"));
        string b = File.ReadAllText(rotated.File("analysis.json"));
        Assert.Contains(":sink0:rot", b);
        Assert.DoesNotContain(":rot", a);
        // Per layer the 2-bit relative errors of K and V: measured again, through the rotation.
        static string Errors(string json) => string.Join(",", JsonDocument.Parse(json).RootElement.GetProperty("layers").EnumerateArray()
            .SelectMany(l => l.GetProperty("quantization").EnumerateArray()).SelectMany(q => new[] { q.GetProperty("k").GetDouble(), q.GetProperty("v").GetDouble() }));
        Assert.NotEqual(Errors(a), Errors(b));
        Assert.Equal("2:gauto:pt:asym:r0:sink0:rot", JsonDocument.Parse(b).RootElement.GetProperty("schemes")[0].GetString());
    }

    [Theory]
    [InlineData("2,x", "--kv-bits")]
    [InlineData("0", "--kv-bits")]
    [InlineData("9", "--kv-bits")]
    [InlineData("fp16", "--kv-bits")]
    public void BadBitListsAreRefusedNamingTheOption(string bits, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => AnalyzeCommand.ParseBits(bits));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void BitListsAreParsedSortedAndDeduplicated()
    {
        Assert.Equal([KvBits.One, KvBits.Ternary, KvBits.Two, KvBits.Four, KvBits.Eight], AnalyzeCommand.ParseBits("8, 2,1,1.58,4,2"));
        Assert.Empty(AnalyzeCommand.ParseBits(string.Empty));
    }

    [Fact]
    public void CalibrationTokensAreBosThenTheTextTruncated()
    {
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        var path = Fixtures.Path("data", "ptb", "ptb.test.txt");
        var ids = AnalyzeCommand.CalibrationTokens(tok, path, 100);
        Assert.Equal(100, ids.Count);
        Assert.Equal(1, ids[0]);
        var text = File.ReadAllText(path);
        Assert.Equal(tok.Encode(text[..20000], addBos: false).Take(99), ids.Skip(1));
    }

    [Theory]
    [InlineData("--tokens", "1")]
    [InlineData("--tokens", "100000")]
    [InlineData("--skip-top", "-1")]
    [InlineData("--kv-bits", "3,banana")]
    [InlineData("--group", "3")]
    [InlineData("--group", "16")]
    [InlineData("--axis", "diagonal")]
    public void BadOptionsExitWithCodeOne(string option, string value)
    {
        using var dir = new TempDir();
        int rc = Program.BuildRoot().Parse(["analyze", "--model", "stories260K", "--data", Fixtures.Path("data", "ptb", "ptb.test.txt"), option, value, "--out", dir.Path]).Invoke();
        Assert.Equal(1, rc);
        Assert.False(File.Exists(dir.File("analysis.json")));
    }

    [Fact]
    public void ARunIntoAnUsedFolderLeavesNoFigureOfTheEarlierRun()
    {
        using var dir = new TempDir();
        string[] Args(string bits) => ["analyze", "--model", "stories260K", "--data", Fixtures.Path("data", "ptb", "ptb.test.txt"), "--tokens", "32", "--kv-bits", bits, "--out", dir.Path, "--threads", "2"];
        Assert.Equal(0, Program.BuildRoot().Parse(Args("4")).Invoke());
        Assert.True(File.Exists(dir.File("quantization_error.png")));
        Assert.True(File.Exists(dir.File("error_propagation.svg")));
        File.WriteAllText(dir.File("notes.txt"), "mine");

        Assert.Equal(0, Program.BuildRoot().Parse(Args(string.Empty)).Invoke());
        foreach (var f in new[] { "quantization_error.png", "quantization_error.svg", "error_propagation.png", "error_propagation.svg" })
        {
            Assert.False(File.Exists(dir.File(f)), $"{f} of the earlier run is still there");
        }

        Assert.True(File.Exists(dir.File("singular_values.png")));
        Assert.Equal("mine", File.ReadAllText(dir.File("notes.txt")));
    }

    [Theory]
    [InlineData("--axis channel --group 1000 --tokens 128 --kv-bits 2", "--group 1000: per-channel groups of 1000 tokens need at least 1000 --tokens, got 128")]
    [InlineData("--skip-top 7 --tokens 16 --kv-bits 2", "--skip-top 7: each head has 8 singular values (the smaller of --tokens 16 and the head dimension 8); at most 6")]
    [InlineData("--skip-top 5 --tokens 6 --kv-bits 2", "--skip-top 5: each head has 6 singular values (the smaller of --tokens 6 and the head dimension 8); at most 4")]
    [InlineData("--tokens 16 --kv-bits 2 --out FILE/sub", "--out FILE/sub: FILE is a file, not a folder")]
    [InlineData("--tokens 16 --kv-bits 2 --group -1", "--group/--axis: group must be >= 0 channels (0: the whole head), got -1")]
    public void BadOptionsAreNamedInOneLine(string options, string expected)
    {
        using var dir = new TempDir();
        var file = dir.File("a-file");
        File.WriteAllText(file, "x");
        var args = new List<string> { "analyze", "--model", Fixtures.Stories260K, "--data", Fixtures.Path("data", "ptb", "ptb.test.txt"), "--threads", "2" };
        args.AddRange(options.Replace("FILE", file, StringComparison.Ordinal).Split(' '));
        if (!options.Contains("--out", StringComparison.Ordinal))
        {
            args.AddRange(["--out", dir.Path]);
        }

        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run(args.ToArray());
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: " + expected.Replace("FILE", file, StringComparison.Ordinal), stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("analysis.json")));
    }

    [Fact]
    public void EmptyDataFileIsRefused()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("empty.txt"), "  \n");
        using var model = ModelLoader.Load("stories260K");
        var e = Assert.Throws<KvAdaQuant.Evaluation.Datasets.DatasetFormatException>(() => AnalyzeCommand.CalibrationTokens(model.Tokenizer!, dir.File("empty.txt"), 10));
        Assert.Contains("empty.txt", e.Message);
        Assert.Contains("empty", e.Message);
    }

    [Fact]
    public void AJsonLinesFileCalibratesOnItsTextFields()
    {
        // analyze (and perplexity, compare) read a .jsonl file as raw text, JSON markup included; eval and allocate
        // --calib take the records' "text" fields.
        using var dir = new TempDir();
        var path = dir.File("records.jsonl");
        File.WriteAllText(path, "{\"text\": \"Once upon a time there was a girl.\"}\n{\"text\": \"She had a dog.\"}\n");
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        var ids = AnalyzeCommand.CalibrationTokens(tok, path, 200);
        Assert.Equal(tok.Encode("Once upon a time there was a girl.\n\nShe had a dog.", addBos: false), ids.Skip(1));
        var none = dir.File("other.jsonl");
        File.WriteAllText(none, "{\"question\": \"Q?\"}\n");
        Assert.Contains("other.jsonl:1: field \"text\"", Assert.ThrowsAny<Exception>(() => AnalyzeCommand.CalibrationTokens(tok, none, 16)).Message);
    }
}
