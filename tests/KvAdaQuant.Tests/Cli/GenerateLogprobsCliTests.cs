using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>kvaq generate --logprobs N</c>: the JSON entries equal the library's <see cref="LogprobOptions"/> run (tokens, texts,
/// bytes, log-probabilities, top tokens); the terminal lists one line per token; out-of-range values are named.
/// </summary>
public class GenerateLogprobsCliTests
{
    [Fact]
    public void Json_logprobs_equal_the_librarys_for_every_generated_token()
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories3M-q80", "-p", "Once upon a time", "-n", "10", "--kv", "k4v2", "--logprobs", "3", "--json");
        Assert.True(rc == 0, stderr);
        var root = JsonDocument.Parse(stdout).RootElement;
        var tokens = root.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var entries = root.GetProperty("logprobs").EnumerateArray().ToArray();
        Assert.Equal(tokens.Length, entries.Length);

        using var m = ModelLoader.Load("stories3M-q80");
        var tok = m.Tokenizer!;
        using var transformer = new Transformer(m, 1);
        using var session = Engine.ForwardingDecodeSession.NewSession(transformer, "k4v2", 256);
        var expected = new Generator(session, tok).Generate(tok.Encode("Once upon a time", addBos: true), 0, 10, new Sampler(), logprobs: new LogprobOptions(3)).Logprobs!;
        int prev = root.GetProperty("prompt_tokens").EnumerateArray().Last().GetInt32();
        for (int i = 0; i < tokens.Length; i++)
        {
            var e = entries[i];
            Assert.Equal(tokens[i], e.GetProperty("token").GetInt32());
            Assert.Equal(expected[i].Logprob, e.GetProperty("logprob").GetSingle());
            var bytes = tok.DecodeBytes(prev, tokens[i]);
            Assert.Equal(bytes.Select(b => (int)b), e.GetProperty("bytes").EnumerateArray().Select(b => b.GetInt32()));
            Assert.Equal(System.Text.Encoding.UTF8.GetString(bytes), e.GetProperty("text").GetString());
            var top = e.GetProperty("top_logprobs").EnumerateArray().ToArray();
            Assert.Equal(expected[i].Top.Select(t => t.Token), top.Select(t => t.GetProperty("token").GetInt32()));
            Assert.Equal(expected[i].Top.Select(t => t.Logprob), top.Select(t => t.GetProperty("logprob").GetSingle()));
            Assert.Equal(tokens[i], top[0].GetProperty("token").GetInt32()); // greedy
            prev = tokens[i];
        }
    }

    [Fact]
    public void The_terminal_gets_a_line_per_token_and_no_option_means_no_entries()
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "5", "--logprobs", "0");
        Assert.True(rc == 0, stderr);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int header = Array.FindIndex(lines, l => l.StartsWith("[logprobs:", StringComparison.Ordinal));
        Assert.True(header >= 0, stderr);
        Assert.Equal(5, lines.Length - header - 1);
        Assert.Matches(@"^\s+0\s+'.*'\s+-?\d+\.\d{4}\s+p=\d\.\d{4}$", lines[header + 1]);
        Assert.StartsWith("Once upon a time", stdout, StringComparison.Ordinal);

        (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Equal(JsonValueKind.Null, JsonDocument.Parse(stdout).RootElement.GetProperty("logprobs").ValueKind);
    }

    [Theory]
    [InlineData("21")]
    [InlineData("-1")]
    public void Out_of_range_values_are_named(string value)
    {
        var (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--logprobs", value);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --logprobs must be in 0..20 (the most likely tokens listed per position; 0 = only the chosen token's), got {value}", stderr.Trim());
    }
}
