using System.Globalization;
using System.Text.Json;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>kvaq generate</c> with llama.cpp's further sampling options (<c>--typical</c>, <c>--mirostat*</c>, <c>--xtc-*</c>,
/// <c>--dry-*</c>, <c>--top-n-sigma</c>) on stories260K: the tokens are the library's <see cref="Generator"/> with a
/// <see cref="Sampler"/> set the same way, and differ from those without the option; misuse is named.
/// </summary>
public class SamplerOptionsCliTests
{
    // A prompt whose continuation repeats it in part (DRY has repeats to penalize).
    private const string Prompt = "Lily and Ben went to the park. Lily and Ben played on the swing. Then Lily and Ben";

    private static List<int> Tokens(string stdout) => [.. JsonDocument.Parse(stdout).RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32())];

    [Theory]
    [InlineData("--temperature", "1", "--seed", "3", "--typical", "0.5")]
    [InlineData("--temperature", "1", "--seed", "3", "--mirostat", "2", "--mirostat-ent", "3", "--mirostat-lr", "0.2")]
    [InlineData("--temperature", "1", "--seed", "3", "--mirostat", "1")]
    [InlineData("--temperature", "1", "--seed", "3", "--xtc-probability", "0.5", "--xtc-threshold", "0.05")]
    [InlineData("--temperature", "1", "--seed", "3", "--top-n-sigma", "0.5")]
    [InlineData("--dry-multiplier", "0.8", "--dry-allowed-length", "1")]
    [InlineData("--dry-multiplier", "0.8", "--dry-base", "2", "--dry-penalty-last-n", "32", "--dry-sequence-breaker", "\\n", "--dry-sequence-breaker", ".")]
    public void Each_option_reaches_the_sampler(params string[] options)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run(["generate", "-m", "stories260K", "-p", Prompt, "-n", "40", "--json", .. options]);
        Assert.True(rc == 0, stderr);
        var got = Tokens(stdout);

        var pairs = options.Chunk(2).ToList();
        string Get(string name, string fallback) => pairs.FirstOrDefault(p => p[0] == name)?[1] ?? fallback;
        float F(string name, string fallback) => float.Parse(Get(name, fallback), CultureInfo.InvariantCulture);
        int I(string name, string fallback) => int.Parse(Get(name, fallback), CultureInfo.InvariantCulture);
        using var model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        string[] breakers = [.. pairs.Where(p => p[0] == "--dry-sequence-breaker").Select(p => p[1].Replace("\\n", "\n", StringComparison.Ordinal))];
        var sampler = new Sampler(F("--temperature", "0"), 0, 1f, ulong.Parse(Get("--seed", "42"), CultureInfo.InvariantCulture))
        {
            TypicalP = F("--typical", "1"),
            Mirostat = I("--mirostat", "0"),
            MirostatTau = F("--mirostat-ent", "5"),
            MirostatEta = F("--mirostat-lr", "0.1"),
            XtcProbability = F("--xtc-probability", "0"),
            XtcThreshold = F("--xtc-threshold", "0.1"),
            TopNSigma = F("--top-n-sigma", "-1"),
            DryMultiplier = F("--dry-multiplier", "0"),
            DryBase = F("--dry-base", "1.75"),
            DryAllowedLength = I("--dry-allowed-length", "2"),
            DryPenaltyLastN = I("--dry-penalty-last-n", "-1"),
            DrySequenceBreakers = DrySequenceBreakers.FromStrings(tok, breakers.Length > 0 ? breakers : DrySequenceBreakers.Defaults),
        };
        using var t = new Transformer(model, 1);
        using var session = new InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(256), half: false));
        Assert.Equal(new Generator(session, tok).Generate(Prompt, 40, sampler).Tokens, got);

        // Without the option under test (temperature and seed kept) the story differs.
        (rc, stdout, stderr) = KvaqProcess.Run(["generate", "-m", "stories260K", "-p", Prompt, "-n", "40", "--json", .. pairs.Where(p => p[0] is "--temperature" or "--seed").SelectMany(p => p)]);
        Assert.True(rc == 0, stderr);
        Assert.NotEqual(got, Tokens(stdout));
    }

    [Fact]
    public void Chat_takes_the_options_each_turn()
    {
        const string input = "Lily and Ben went to the park.\nThen Lily and Ben\n";
        string[] Replies(params string[] options)
        {
            var (rc, stdout, stderr) = KvaqProcess.RunWithInput(input, ["chat", "-m", "stories260K", "-n", "24", "--temperature", "1", "--seed", "3", "--json", .. options]);
            Assert.True(rc == 0, stderr);
            return [.. stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("reply").GetString()!)];
        }

        var plain = Replies();
        Assert.Equal(2, plain.Length);
        foreach (string[] options in new[] { new[] { "--mirostat", "2" }, ["--dry-multiplier", "2", "--dry-allowed-length", "1"], ["--xtc-probability", "1"], ["--typical", "0.3"], ["--top-n-sigma", "0.3"] })
        {
            var replies = Replies(options);
            Assert.Equal(2, replies.Length);
            Assert.NotEqual(plain, replies);
        }
    }

    [Theory]
    [InlineData("--typical", "2", "--typical must be in [0, 1], got 2")]
    [InlineData("--mirostat", "3", "--mirostat must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0), got 3")]
    [InlineData("--mirostat-lr", "-1", "--mirostat-lr must be finite and >= 0, got -1")]
    [InlineData("--mirostat-ent", "NaN", "--mirostat-ent must be finite and >= 0, got NaN")]
    [InlineData("--xtc-probability", "2", "--xtc-probability must be in [0, 1], got 2")]
    [InlineData("--xtc-threshold", "-0.5", "--xtc-threshold must be in [0, 1], got -0.5")]
    [InlineData("--dry-multiplier", "-1", "--dry-multiplier must be finite and >= 0 (0 = off), got -1")]
    [InlineData("--dry-base", "0.5", "--dry-base must be finite and >= 1, got 0.5")]
    [InlineData("--dry-allowed-length", "-1", "--dry-allowed-length must be >= 0, got -1")]
    [InlineData("--dry-penalty-last-n", "-2", "--dry-penalty-last-n must be >= -1 (-1 = the whole sequence, 0 = off), got -2")]
    [InlineData("--top-n-sigma", "Infinity", "--top-n-sigma must be finite (<= 0 = off), got Infinity")]
    [InlineData("--dry-sequence-breaker", "", "--dry-sequence-breaker: a breaker is an empty text")]
    public void Misuse_is_named(string option, string value, string message)
    {
        foreach (string command in new[] { "generate", "chat" })
        {
            var (rc, stdout, stderr) = KvaqProcess.Run(command, "-m", "stories260K", "-n", "4", option, value);
            Assert.Equal(1, rc);
            Assert.Equal($"kvaq: error: {message}", stderr.Trim());
            Assert.Empty(stdout);
        }
    }

    [Fact]
    public void None_clears_the_breakers_and_cannot_be_mixed()
    {
        var (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "4", "--dry-sequence-breaker", "none", "--dry-sequence-breaker", ":");
        Assert.Equal(1, rc);
        Assert.Equal("kvaq: error: --dry-sequence-breaker: 'none' (no breakers) cannot be given with other breakers", stderr.Trim());
        (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "8", "--dry-multiplier", "1", "--dry-sequence-breaker", "none");
        Assert.True(rc == 0, stderr);
    }

    [Theory]
    [InlineData("a\\nb", "a\nb")]
    [InlineData("\\t\\\"\\'\\\\", "\t\"'\\")]
    [InlineData("\\x41z", "Az")]
    [InlineData("\\q", "\\q")]
    [InlineData("end\\", "end\\")]
    public void Breakers_read_llama_cpp_escapes(string given, string expected) =>
        Assert.Equal(expected, KvAdaQuant.Cli.Commands.SamplingOptions.Unescape(given));
}
