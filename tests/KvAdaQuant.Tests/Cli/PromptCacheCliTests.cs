using System.Text.RegularExpressions;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>kvaq generate --prompt-cache</c>, <c>--prompt-cache-ro</c>, <c>--prompt-cache-all</c>: a second run reuses the
/// cached prompt and prints the same text as a run without the cache; a prompt the file does not start is recomputed
/// with a note; another model or plan and damaged files are errors.
/// </summary>
public sealed partial class PromptCacheCliTests : IDisposable
{
    private const string Prompt = "Once upon a time, there was a little dog named Max. He liked to run in the park";
    private const string Longer = Prompt + " with his friend, a big brown cat";

    private readonly string _dir = Directory.CreateTempSubdirectory("kvaq-prompt-cache-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("k4v2")]
    [InlineData("fp16")]
    [InlineData("k2v4:r8:sink4")]
    public void A_second_run_reuses_the_cached_prompt_and_prints_the_same_text(string kv)
    {
        string file = Path.Combine(_dir, "prompt.kvstate");
        string plain = Generate(Prompt, kv).Stdout;
        string longerPlain = Generate(Longer, kv).Stdout;

        var first = Generate(Prompt, kv, "--prompt-cache", file);
        Assert.Equal(plain, first.Stdout);
        Assert.Contains($"[prompt cache {file}: not found; it will be created]", first.Stderr);
        int promptTokens = PromptTokens(first.Stderr);
        long size = new FileInfo(file).Length;
        Assert.Contains($"[prompt cache {file}: saved {promptTokens} tokens, {size:N0} bytes (KV cache {kv}: ", first.Stderr);
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp")); // written to a temporary file, renamed over the target
        var bytes = File.ReadAllBytes(file);

        var second = Generate(Prompt, kv, "--prompt-cache", file);
        Assert.Equal(plain, second.Stdout);
        Assert.Contains($"[prompt cache {file}: {size:N0} bytes, {promptTokens} tokens, KV cache {kv}; reused {promptTokens} of {promptTokens} prompt tokens]", second.Stderr);
        Assert.Contains($"[prompt cache {file}: not updated (it holds the whole prompt already)]", second.Stderr);
        Assert.Equal(bytes, File.ReadAllBytes(file));

        // A longer prompt that starts with the cached one: only its new tokens are evaluated, and the file is updated. The
        // text is the same where the cache has no residual window: a batch appends all its positions before it attends, so
        // with a window its positions leave it (are quantized) at other moments when the prompt runs in two batches.
        var third = Generate(Longer, kv, "--prompt-cache", file);
        if (!kv.Contains(":r", StringComparison.Ordinal))
        {
            Assert.Equal(longerPlain, third.Stdout);
        }

        int longerTokens = PromptTokens(third.Stderr);
        Assert.Contains($"reused {promptTokens} of {longerTokens} prompt tokens]", third.Stderr);
        Assert.Contains($"[prompt cache {file}: saved {longerTokens} tokens, {new FileInfo(file).Length:N0} bytes", third.Stderr);
        Assert.DoesNotContain("kvaq: note:", third.Stderr);
    }

    [Fact]
    public void Read_only_loads_but_never_writes_the_file()
    {
        string file = Path.Combine(_dir, "ro.kvstate");
        var missing = Generate(Prompt, "k4v2", "--prompt-cache", file, "--prompt-cache-ro");
        Assert.Contains($"[prompt cache {file}: not found; --prompt-cache-ro: it will not be created]", missing.Stderr);
        Assert.False(File.Exists(file));

        Generate(Prompt, "k4v2", "--prompt-cache", file);
        var bytes = File.ReadAllBytes(file);
        var written = File.GetLastWriteTimeUtc(file);
        var ro = Generate(Longer, "k4v2", "--prompt-cache", file, "--prompt-cache-ro");
        Assert.Equal(Generate(Longer, "k4v2").Stdout, ro.Stdout);
        Assert.Contains($"[prompt cache {file}: not updated (--prompt-cache-ro)]", ro.Stderr);
        Assert.Matches(@"reused \d+ of \d+ prompt tokens", ro.Stderr);
        Assert.Equal(bytes, File.ReadAllBytes(file));
        Assert.Equal(written, File.GetLastWriteTimeUtc(file));
    }

    [Theory]
    [InlineData("fp16", true)]
    [InlineData("k4v2", true)] // per-token groups without a window: each position quantized alone, any prefix exact
    [InlineData("k4v4:pc:g16", false)] // per-channel chunks of 16: the cut falls inside a quantized chunk
    public void All_saves_the_generated_tokens_and_a_prompt_the_file_extends_is_cut_back_where_that_is_exact(string kv, bool exact)
    {
        string file = Path.Combine(_dir, "all.kvstate");
        string plain = Generate(Prompt, kv).Stdout;
        var all = Generate(Prompt, kv, "--prompt-cache", file, "--prompt-cache-all");
        Assert.Equal(plain, all.Stdout);
        int promptTokens = PromptTokens(all.Stderr);

        // 12 tokens generated, the last one not fed: the cache holds the prompt and 11 more.
        Assert.Contains($"[prompt cache {file}: saved {promptTokens + 11} tokens, ", all.Stderr);

        // The same prompt again: the file holds more than the prompt. FP16 and per-token k4v2 positions can be dropped (all
        // but the prompt's last token are kept, its logits being recomputed); a per-channel chunk cannot be cut, and the
        // prompt runs from scratch.
        var again = Generate(Prompt, kv, "--prompt-cache", file);
        Assert.Equal(plain, again.Stdout);
        if (exact)
        {
            Assert.Contains($"reused {promptTokens - 1} of {promptTokens} prompt tokens]", again.Stderr);
            Assert.DoesNotContain("kvaq: note:", again.Stderr);
        }
        else
        {
            Assert.Contains($"kvaq: note: --prompt-cache {file}: the file's {promptTokens + 11} tokens match the prompt's first {promptTokens} of {promptTokens}, and its KV cache ", again.Stderr);
            Assert.Contains($" cannot drop positions {promptTokens - 1}..{promptTokens + 10} exactly", again.Stderr);
            Assert.Contains($"reused 0 of {promptTokens} prompt tokens]", again.Stderr);
        }

        Assert.Contains($"[prompt cache {file}: saved {promptTokens} tokens, ", again.Stderr);
    }

    [Fact]
    public void A_prompt_that_differs_early_is_recomputed_with_a_note()
    {
        string file = Path.Combine(_dir, "other.kvstate");
        // Per-channel chunks of 16: the file's prompt (21 tokens) has its first 16 positions quantized together, so BOS
        // alone cannot be kept.
        const string Kv = "k4v4:pc:g16";
        Generate(Prompt, Kv, "--prompt-cache", file);
        const string Other = "The sun was hot and the little bird sang";
        var run = Generate(Other, Kv, "--prompt-cache", file);
        Assert.Equal(0, run.Rc);
        Assert.Equal(Generate(Other, Kv).Stdout, run.Stdout);
        int tokens = PromptTokens(run.Stderr);
        Assert.Contains($"kvaq: note: --prompt-cache {file}: the file's ", run.Stderr);
        Assert.Contains($" tokens match the prompt's first 1 of {tokens}, and its KV cache ", run.Stderr);
        Assert.Contains(" cannot drop positions 1..", run.Stderr);
        Assert.Contains("evaluating the whole prompt", run.Stderr);
        Assert.Contains($"reused 0 of {tokens} prompt tokens]", run.Stderr);
    }

    [Fact]
    public void Another_model_another_plan_and_damaged_files_are_errors_naming_the_problem()
    {
        string file = Path.Combine(_dir, "good.kvstate");
        Generate(Prompt, "k4v2", "--prompt-cache", file);
        var bytes = File.ReadAllBytes(file);

        string Error(string path, string model = "stories3M-q80", string kv = "k4v2")
        {
            var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", model, "-p", Prompt, "-n", "4", "--kv", kv, "--prompt-cache", path);
            Assert.Equal(1, rc);
            Assert.Equal(string.Empty, stdout); // refused before the prompt is echoed
            return stderr;
        }

        Assert.Contains($"kvaq: error: --prompt-cache {file}: the state was saved with another model (stories3M-q80.bin): dim is 192 in the file but 64 in stories260K.bin", Error(file, "stories260K"));
        Assert.Contains($"kvaq: error: --prompt-cache {file}: the state was saved with another KV plan (k4v2): layer 0 holds K 4:gauto:pt:asym:r0:sink0, V 2:gauto:pt:asym:r0:sink0 in the file but K fp16, V fp16 in this cache (fp16)", Error(file, kv: "fp16"));

        string cut = Path.Combine(_dir, "cut.kvstate");
        File.WriteAllBytes(cut, bytes[..^100]);
        Assert.Contains($"kvaq: error: --prompt-cache {cut}: truncated state file: {bytes.Length - 100:N0} bytes, but its header describes {bytes.Length:N0}; it ends in the layer 5 V data", Error(cut));

        string garbage = Path.Combine(_dir, "garbage.kvstate");
        File.WriteAllText(garbage, "hello, world");
        Assert.Contains($"kvaq: error: --prompt-cache {garbage}: not a kvaq state file (it starts with \"hello, w\", not \"KVAQSTAT\")", Error(garbage));

        string flipped = Path.Combine(_dir, "flipped.kvstate");
        var damaged = (byte[])bytes.Clone();
        damaged[^200] ^= 1;
        File.WriteAllBytes(flipped, damaged);
        Assert.Contains("corrupt state file: the SHA-256 checksum", Error(flipped));
        Assert.Equal(bytes, File.ReadAllBytes(file)); // refused files are left alone
    }

    [Fact]
    public void The_options_are_checked()
    {
        var (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--prompt-cache-ro");
        Assert.Equal(1, rc);
        Assert.Contains("kvaq: error: --prompt-cache-ro needs --prompt-cache FILE", stderr);
        (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--prompt-cache-all");
        Assert.Contains("kvaq: error: --prompt-cache-all needs --prompt-cache FILE", stderr);
        (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--prompt-cache", _dir);
        Assert.Equal(1, rc);
        Assert.Contains($"kvaq: error: --prompt-cache {_dir}: is a folder; give a file", stderr);
        (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--prompt-cache", Path.Combine(_dir, "x"), "--device", "cuda");
        Assert.Equal(1, rc);
        Assert.Contains("kvaq: error: --prompt-cache saves and loads the CPU engine's KV cache; it cannot be combined with --device cuda", stderr);
    }

    private static (int Rc, string Stdout, string Stderr) Generate(string prompt, string kv, params string[] more)
    {
        var r = KvaqProcess.Run(["generate", "-m", "stories3M-q80", "-p", prompt, "-n", "12", "--kv", kv, "--threads", "1", .. more]);
        Assert.True(r.Rc == 0, r.Stderr);
        return r;
    }

    private static int PromptTokens(string stderr) => int.Parse(PromptTokensLine().Match(stderr).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);

    [GeneratedRegex(@"\[(\d+) prompt tokens, ")]
    private static partial Regex PromptTokensLine();
}
