namespace KvAdaQuant.Tests.Cli;

/// <summary>Bad command-line options through the real kvaq executable: one line naming the option, exit code 1, nothing else written.</summary>
public class OptionErrorsCliTests
{
    [Theory]
    [InlineData("--temperature", "-1")]
    [InlineData("--top-k", "-1")]
    [InlineData("--top-p", "2")]
    [InlineData("--min-p", "2")]
    [InlineData("--repeat-penalty", "0")]
    [InlineData("--repeat-last-n", "-3")]
    [InlineData("--presence-penalty", "NaN")]
    [InlineData("--frequency-penalty", "Infinity")]
    public void GenerateSamplerOptionsAreNamedWithoutDotNetParameterNames(string option, string value)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "--model", Fixtures.Stories260K, "-n", "4", option, value);
        Assert.Equal(1, rc);
        Assert.StartsWith($"kvaq: error: {option} must be ", stderr);
        Assert.DoesNotContain("(Parameter", stderr);
        Assert.DoesNotContain('\n', stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("--max-tokens", "abc", "kvaq: error: --max-tokens 'abc' is not an integer (-2147483648 to 2147483647)")]
    [InlineData("--max-tokens", "99999999999", "kvaq: error: --max-tokens '99999999999' is not an integer (-2147483648 to 2147483647)")]
    [InlineData("--temperature", "warm", "kvaq: error: --temperature 'warm' is not a number, e.g. 0.8 or 1e-3")]
    public void ValuesOfTheWrongTypeAreNamedWithoutDotNetTypeNames(string option, string value, string message)
    {
        // System.CommandLine says "as expected type 'System.Int32'"; a user typed an option, not a .NET type.
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "--model", Fixtures.Stories260K, option, value);
        Assert.Equal(1, rc);
        Assert.Equal(message, stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("Required argument missing for option: '--kv-plan'.")]
    [InlineData("Cannot parse argument 'x' for option '--shape' as expected type 'KvAdaQuant.Something'.")]
    public void UnrecognisedParseMessagesPassThrough(string message) =>
        Assert.Equal(message, KvAdaQuant.Cli.ParseErrorText.Describe(message));

    [Theory]
    [InlineData("k16v16:g4", "kvaq: error: --kv 'k16v16:g4': option 'g4' has nothing to apply to")]
    [InlineData("fp16:g4", "kvaq: error: --kv 'fp16:g4': fp16 stores keys and values unquantized and takes no options")]
    public void QuantizerOptionsOnAnUnquantizedCacheAreRejected(string kv, string message)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "--model", Fixtures.Stories260K, "-n", "4", "--kv", kv);
        Assert.Equal(1, rc);
        Assert.StartsWith(message, stderr);
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("300", "--prompt has 402 tokens (BOS included) but the context holds 300 (--ctx; the model's context is 512)")]
    [InlineData("0", "--prompt has 602 tokens (BOS included) but the context holds 512 (--ctx; the model's context is 512)")]
    public void PromptLongerThanTheContextFailsBeforeAnythingIsPrinted(string ctx, string message)
    {
        // BOS, the leading space SentencePiece adds, then one byte token "<0x0A>" per newline: 402 and 602 tokens.
        int lines = ctx == "0" ? 600 : 400;
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "--model", Fixtures.Stories260K, "-n", "4", "--ctx", ctx, "--prompt", new string('\n', lines));
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: {message}", stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("--data", "data file '{0}' is a folder; give a file in it")]
    [InlineData("--kv-plan", "--kv-plan {0}: is a folder, not a plan file")]
    [InlineData("--tokenizer", "{0}: is a folder, not a tokenizer file")]
    public void AFolderWhereAFileGoesIsNamedAsAFolder(string option, string message)
    {
        // Each said "not found" of a folder that exists.
        using var dir = new TempDir();
        string[] data = option == "--data" ? [] : ["--data", "ptb/ptb.test.txt"];
        var (rc, stdout, stderr) = KvaqProcess.Run(["perplexity", "--model", Fixtures.Stories260K, .. data, option, dir.Path, "--ctx", "64", "--chars", "2000", "--threads", "1"]);
        Assert.Equal(1, rc);
        Assert.Equal("kvaq: error: " + string.Format(System.Globalization.CultureInfo.InvariantCulture, message, dir.Path), stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Fact]
    public void ADatasetGivenAsTheModelIsNamedAsNoModel()
    {
        string data = Fixtures.Path("data", "ptb", "ptb.test.txt");
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "--model", data, "-n", "4");
        Assert.Equal(1, rc);
        Assert.StartsWith($"kvaq: error: {data}: not a GGUF file (no GGUF magic) nor a llama2.c fp32 checkpoint", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("2147483647", "2", "4294967294")]
    [InlineData("65536", "65536", "4294967296")]
    public void BenchRunsTimesDecodeTokensDoNotOverflow(string runs, string decode, string product)
    {
        // runs x decode tokens overflowed int: "Specified argument was out of the range of valid values.", no option named.
        var (rc, stdout, stderr) = KvaqProcess.Run("bench", "--model", Fixtures.Stories260K, "--ctx", "500", "--runs", runs, "--decode-tokens", decode);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --ctx 500 must exceed --runs x --decode-tokens = {product} (the prompt is ctx - runs x decode tokens)", stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("bogus")]
    public void BenchVsCacheWithoutVsIsRefused(string type)
    {
        // It was ignored, unchecked even: the bench ran kvaq alone and printed its table.
        var (rc, stdout, stderr) = KvaqProcess.Run("bench", "--model", Fixtures.Stories260K, "--ctx", "128", "--runs", "1", "--decode-tokens", "4", "--vs-cache", type);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --vs-cache '{type}' applies only with --vs llama.cpp (it sets llama.cpp's cache type)", stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("100000")]
    public void InfoCtxMustFitTheModel(string ctx)
    {
        // --ctx 100000 on a 512-position model printed the KV bytes of a context the model cannot run.
        var (rc, stdout, stderr) = KvaqProcess.Run("info", "--model", Fixtures.Stories260K, "--kv", "k4v2", "--ctx", ctx);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --ctx must be in 0..512 (0 = the model's context), got {ctx}", stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("perplexity")]
    [InlineData("analyze")]
    [InlineData("eval")]
    [InlineData("allocate")]
    public void ABinaryFileIsNotReadAsText(string command)
    {
        // The model file itself given as --data (or --calib): it was tokenized as text and scored.
        string model = Fixtures.Stories260K;
        string[] args = command switch
        {
            "perplexity" => ["perplexity", "--model", model, "--data", model, "--ctx", "64"],
            "analyze" => ["analyze", "--model", model, "--data", model, "--tokens", "16", "--out", Path.Combine(Path.GetTempPath(), "kvaq-test-" + Guid.NewGuid().ToString("N"))],
            "eval" => ["eval", "--model", model, "--task", "kl", "--data", model, "--ctx", "64", "--limit", "1"],
            _ => ["allocate", "--model", model, "--budget", "k4v4", "--calib", model, "--calib-tokens", "16"],
        };
        var (rc, stdout, stderr) = KvaqProcess.Run([.. args, "--threads", "1"]);
        Assert.Equal(1, rc);
        Assert.StartsWith($"kvaq: error: {model}: not a text file (", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("analyze", " ")]
    [InlineData("analyze", "")]
    [InlineData("demo", " ")]
    [InlineData("pull", "")]
    public void AnEmptyOutputFolderIsRefused(string command, string dir)
    {
        // analyze and demo made the path absolute before checking it: --out '' was .NET's "The value cannot be an empty
        // string." and --out ' ' wrote the results into a new folder named " "; pull passed '' on to the download.
        string[] args = command switch
        {
            "analyze" => ["analyze", "--model", Fixtures.Stories260K, "--data", "ptb/ptb.test.txt", "--tokens", "16", "--threads", "1"],
            "demo" => ["demo", "--model", Fixtures.Stories260K, "--threads", "1"],
            _ => ["pull", "http://127.0.0.1:1/model.gguf", "--no-sidecar"],
        };
        var (rc, stdout, stderr) = KvaqProcess.Run([.. args, "--out", dir]);
        Assert.Equal(1, rc);
        Assert.Equal("kvaq: error: --out: empty folder name", stderr.TrimEnd());
        Assert.Empty(stdout);
        Assert.False(Directory.Exists(Path.Combine(Environment.CurrentDirectory, " ")));
    }

    [Theory]
    [InlineData("--chunks", "-1", "--chunks must be >= 0 (0 = all), got -1")]
    [InlineData("--chars", "-5", "--chars must be >= 0, got -5")]
    public void PerplexityCountsMustNotBeNegative(string option, string value, string message)
    {
        string[] chars = option == "--chars" ? [] : ["--chars", "2000"];
        var (rc, stdout, stderr) = KvaqProcess.Run(["perplexity", "--model", Fixtures.Stories260K, "--data", "wikitext-2/wiki.test.raw", "--ctx", "128", .. chars, option, value]);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: {message}", stderr.TrimEnd());
        Assert.Empty(stdout);
    }

    [Theory]
    [InlineData("2", "--ctx must be at least 4, got 2")]
    [InlineData("100000", "--ctx 100000 exceeds the model's context length 512")]
    public void PerplexityCtxIsNamedWithoutDotNetParameterNames(string ctx, string message)
    {
        var (rc, _, stderr) = KvaqProcess.Run("perplexity", "--model", Fixtures.Stories260K, "--data", "wikitext-2/wiki.test.raw", "--chars", "2000", "--ctx", ctx);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: {message}", stderr.TrimEnd());
    }
}
