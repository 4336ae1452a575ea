using System.Text.Json;

namespace KvAdaQuant.Tests.Cli;

/// <summary><c>kvaq tokenize</c>: the ids are the library tokenizer's (what generate feeds), pieces one per line, llama-tokenize's output forms.</summary>
public class TokenizeCommandTests
{
    private const string Text = "Once upon a time, naïve 日本\nx";

    [Theory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public void The_ids_are_the_tokenizers_and_the_pieces_are_its_bytes(string model)
    {
        using var m = KvAdaQuant.Formats.ModelLoader.Load(model);
        var expected = m.Tokenizer!.Encode(Text, addBos: true);

        var (rc, stdout, stderr) = KvaqProcess.Run("tokenize", "-m", model, "-p", Text, "--json");
        Assert.True(rc == 0, stderr);
        var root = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(expected, root.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(expected.Count, root.GetProperty("count").GetInt32());
        var pieces = root.GetProperty("pieces").EnumerateArray().Select(e => e.GetString()!).ToList();
        Assert.Equal("(BOS)", pieces[0]);
        // Whole-character pieces are the decoded text; partial UTF-8 bytes are \xNN; the newline is escaped.
        Assert.Equal(Text.Replace("\n", "\\n", StringComparison.Ordinal), Unescape(string.Concat(pieces.Skip(1))));

        (rc, stdout, stderr) = KvaqProcess.Run("tokenize", "-m", model, "-p", Text, "--ids", "--no-bos", "--show-count");
        Assert.True(rc == 0, stderr);
        Assert.Equal($"[{string.Join(", ", expected.Skip(1))}]\nTotal number of tokens: {expected.Count - 1}\n", stdout.ReplaceLineEndings("\n"));

        (rc, stdout, stderr) = KvaqProcess.Run("tokenize", "-m", model, "-p", "Once upon");
        Assert.True(rc == 0, stderr);
        var lines = stdout.ReplaceLineEndings("\n").TrimEnd('\n').Split('\n');
        Assert.Equal("     1 -> '(BOS)'", lines[0]);
        Assert.Equal(m.Tokenizer.Encode("Once upon", addBos: true).Count, lines.Length);
        Assert.EndsWith(" -> 'Once'", lines[1], StringComparison.Ordinal);
    }

    /// <summary>Turns the \xNN runs of a piece string back into the UTF-8 text they spell (\n stays escaped).</summary>
    private static string Unescape(string s)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length && s[i + 1] == 'x')
            {
                bytes.Add(Convert.ToByte(s.Substring(i + 2, 2), 16));
                i += 3;
            }
            else
            {
                bytes.AddRange(System.Text.Encoding.UTF8.GetBytes(s[i].ToString()));
            }
        }

        return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
    }

    [Fact]
    public void Parse_special_turns_control_tokens_in_the_text_into_their_ids()
    {
        using var tmp = new TempDir();
        string gguf = Path.Combine(tmp.Path, "s260.gguf");
        var (rc, _, stderr) = KvaqProcess.Run("convert", "-m", "stories260K", "--out", gguf);
        Assert.True(rc == 0, stderr);
        (rc, var stdout, stderr) = KvaqProcess.Run("tokenize", "-m", gguf, "-p", "Hi</s>", "--ids");
        Assert.True(rc == 0, stderr);
        Assert.Equal("[1, 320, 417, 504, 492, 419, 505]", stdout.Trim());
        (rc, stdout, stderr) = KvaqProcess.Run("tokenize", "-m", gguf, "-p", "Hi</s>", "--parse-special");
        Assert.True(rc == 0, stderr);
        Assert.Equal("     2 -> '(EOS)'", stdout.ReplaceLineEndings("\n").TrimEnd('\n').Split('\n')[^1]);
    }

    [Theory]
    [InlineData(new byte[] { 0x61, 0x0A, 0x09 }, "a\\n\\t")]
    [InlineData(new byte[] { 0xE6 }, "\\xE6")]
    [InlineData(new byte[] { 0xE6, 0x97, 0xA5 }, "日")]
    [InlineData(new byte[] { 0x01 }, "\\x01")]
    public void Pieces_stay_on_their_line(byte[] bytes, string expected) =>
        Assert.Equal(expected, KvAdaQuant.Cli.Commands.TokenizeCommand.Piece(bytes));

    [Fact]
    public void Both_a_prompt_and_a_file_is_an_error_naming_them()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "t.txt");
        File.WriteAllText(path, "x");
        var (rc, stdout, stderr) = KvaqProcess.Run("tokenize", "-m", "stories260K", "-p", "y", "-f", path);
        Assert.Equal(1, rc);
        Assert.Equal("kvaq: error: --file and --prompt: give the prompt one way, not both", stderr.TrimEnd());
        Assert.Empty(stdout);
    }
}
