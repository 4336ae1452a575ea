using System.Diagnostics;
using System.Security.Cryptography;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// Commands that write files, made to fail after their up-front checks (the work has started and the output folder
/// exists) or interrupted with Ctrl+C or SIGTERM: no folder they created is left behind, no partial file, and an existing folder
/// with the user's files (one named like an output) is left exactly as it was.
/// </summary>
public class FailedRunOutputTests
{
    private static string S260K => Fixtures.Stories260K;

    private static string Ptb => Fixtures.Path("data", "ptb", "ptb.test.txt");

    [Fact]
    public void Eval_that_fails_on_its_dataset_leaves_no_output()
    {
        using var data = new TempDir();
        var items = data.File("a.jsonl");
        File.WriteAllText(items, "{\"question\":{\"stem\":\"Q?\",\"choices\":[{\"text\":\"yes\",\"label\":\"A\"}]},\"answerKey\":\"A\"}\n");
        AssertFolderOutputLeftAlone(
            "results.json",
            "a.jsonl:1: has 1 choice; needs at least 2",
            dir => ["eval", "--model", S260K, "--task", "arc_easy", "--data", items, "--out", dir, "--threads", "1"]);
    }

    [Fact]
    public void Analyze_that_fails_after_the_capture_leaves_no_output()
    {
        // Keys beyond the FP16 range are captured (FP32) and their spectra computed; the first quantization round trip
        // refuses them, with the folder and its staging folder made.
        using var model = new TempDir();
        var bigKeys = BigKeysModel(model);
        AssertFolderOutputLeftAlone(
            "report.html",
            "is not a finite FP16-range value: refusing to quantize it",
            dir => ["analyze", "--model", bigKeys, "--tokenizer", Fixtures.Stories260KTokenizer, "--data", Ptb, "--tokens", "16", "--kv-bits", "2", "--out", dir, "--threads", "1"]);
    }

    [Fact]
    public void Demo_that_fails_after_the_analysis_leaves_no_analysis_behind()
    {
        // The analysis is written (into the staging folder) and printed before the sensitivity measurement's quantized
        // caches refuse keys beyond the FP16 range.
        using var model = new TempDir();
        var bigKeys = BigKeysModel(model);
        AssertFolderOutputLeftAlone(
            "report.md",
            "is not finite: refusing to quantize it",
            dir => ["demo", "--model", bigKeys, "--tokenizer", Fixtures.Stories260KTokenizer, "--ctx", "16", "--chunks", "1", "--calib-tokens", "16", "--out", dir, "--threads", "1"],
            after: "analysed 16 calibration tokens");
    }

    [Fact]
    public void Allocate_that_fails_while_measuring_writes_no_plan()
    {
        using var model = new TempDir();
        var bigKeys = BigKeysModel(model);
        AssertFileOutputLeftAlone(
            "plan.json",
            "is not finite: refusing to quantize it",
            path => ["allocate", "--model", bigKeys, "--tokenizer", Fixtures.Stories260KTokenizer, "--policy", "sensitivity", "--budget", "6", "--calib-tokens", "16", "--out", path, "--threads", "1"]);
    }

    [Fact]
    public void Analyze_refuses_the_emulated_cache_for_per_channel_groups_before_loading_the_model()
    {
        // The model does not exist: the --emulated-cache error comes first, and no folder is made.
        using var tmp = new TempDir();
        var dir = Path.Combine(tmp.Path, "new", "out");
        var (rc, stdout, stderr) = KvaqProcess.Run("analyze", "--model", tmp.File("missing.bin"), "--data", Ptb, "--tokens", "16", "--kv-bits", "2", "--axis", "channel", "--group", "4", "--emulated-cache", "--out", dir, "--threads", "1");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal(
            "kvaq: error: --emulated-cache: the analysis cache emulates per-token specs without residual window or sinks only, not --axis channel (leave out --emulated-cache to measure with the library's quantized cache, or --kv-bits '' to measure no widths)",
            stderr.TrimEnd());
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));

        // With no widths to measure the emulated cache is never built: the same options then run.
        (rc, _, stderr) = KvaqProcess.Run("analyze", "--model", S260K, "--data", Ptb, "--tokens", "16", "--kv-bits", string.Empty, "--axis", "channel", "--group", "4", "--emulated-cache", "--out", dir, "--threads", "1", "--json");
        Assert.True(rc == 0, stderr);
        Assert.True(File.Exists(Path.Combine(dir, "report.html")));
    }

    [Fact]
    public void Demo_refuses_a_budget_below_the_cheapest_width_before_any_work()
    {
        // Without --json demo prints "model ..." once the folder is made; the error is the only line, and no folder is made.
        using var tmp = new TempDir();
        var (rc, stdout, stderr) = KvaqProcess.Run("demo", "--model", S260K, "--budget", "2", "--bit-range", "4,8", "--ctx", "16", "--chunks", "1", "--calib-tokens", "16", "--out", Path.Combine(tmp.Path, "new", "out"), "--threads", "1");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal("kvaq: error: --budget 2: even K4V4 costs 8 bits per element (real accounting)", stderr.TrimEnd());
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Theory]
    [InlineData("norm-aware", "real", "4,8", "2", "--budget 2: even the lowest width 4 everywhere costs 8 bits per element (real accounting)")]
    [InlineData("uniform", "real", "4,8", "2", "--budget 2: even K4V4 costs 8 bits per element (real accounting)")]
    [InlineData("key-favoring", "real", "4,8", "2", "--budget 2: even K4V4 costs 8 bits per element (real accounting)")]
    [InlineData("sensitivity", "real", "4,8", "2", "--budget 2: even the lowest width everywhere exceeds it (real accounting)")]
    [InlineData("norm-aware", "nominal", "2,3", "1", "--budget 1: even the lowest width 2 everywhere costs 2 bits per element (nominal accounting)")]
    public void Allocate_refuses_a_budget_below_the_cheapest_width_before_measuring(string policy, string accounting, string range, string budget, string message)
    {
        // --calib names a file that does not exist: norm-aware and sensitivity would fail on it first if they measured
        // before checking the budget (uniform and key-favoring measure nothing: the same message as their allocators').
        using var tmp = new TempDir();
        var (rc, stdout, stderr) = KvaqProcess.Run("allocate", "--model", S260K, "--policy", policy, "--accounting", accounting, "--budget", budget, "--bit-range", range, "--calib", tmp.File("missing.txt"), "--calib-tokens", "16", "--out", tmp.File("plan.json"), "--threads", "1");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal($"kvaq: error: {message}", stderr.TrimEnd());
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Theory]
    [InlineData("{dir}/no/such/plan.json", "--out {dir}/no/such/plan.json: the folder {dir}/no/such does not exist")]
    [InlineData("{dir}", "--out {dir}: is a folder; give a file path such as {dir}/plan.json")]
    public void Allocate_refuses_an_out_it_cannot_write_before_loading_the_model(string path, string message)
    {
        using var tmp = new TempDir();

        // The model does not exist either: the --out error comes first.
        var (rc, stdout, stderr) = KvaqProcess.Run("allocate", "--model", tmp.File("missing.bin"), "--budget", "3", "--out", path.Replace("{dir}", tmp.Path));
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal($"kvaq: error: {message.Replace("{dir}", tmp.Path)}", stderr.TrimEnd());
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void Convert_that_fails_after_loading_the_model_leaves_an_existing_file_alone()
    {
        AssertFileOutputLeftAlone(
            "s.gguf",
            "tokenizer and model vocabularies disagree",
            path => ["convert", "--model", S260K, "--tokenizer", Fixtures.Stories3MTokenizer, "--type", "q8_0", "--out", path]);
    }

    [Fact]
    public void Verify_decode_refuses_an_out_it_cannot_write_before_opening_the_gpu()
    {
        using var tmp = new TempDir();
        var path = Path.Combine(tmp.Path, "no", "verify.md");
        var (rc, stdout, stderr) = KvaqProcess.Run("verify-decode", "--synthetic", "", "--out", path);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal($"kvaq: error: --out {path}: the folder {Path.Combine(tmp.Path, "no")} does not exist", stderr.TrimEnd());
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void Pull_that_fails_removes_the_folder_it_created_and_leaves_an_existing_one_alone()
    {
        using var server = new LocalHttpServer();
        var data = new byte[30_000];
        new Random(5).NextBytes(data);
        server.Serve("/m.bin", data);
        using var tmp = new TempDir();
        var fresh = Path.Combine(tmp.Path, "models", "new");

        // A 404 (nothing written) and a checksum mismatch (the partial file deleted) into a new folder: no folder left.
        Assert.Equal(1, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/missing.bin", "--out", fresh, "--no-sidecar"]));
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
        Assert.Equal(1, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/m.bin", "--out", fresh, "--sha256", new string('0', 64)]));
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));

        // An existing folder keeps the user's files, and a failed pull's own files go.
        var mine = tmp.File("mine");
        Directory.CreateDirectory(mine);
        File.WriteAllText(Path.Combine(mine, "m.bin"), "a different file of that name");
        File.WriteAllText(Path.Combine(mine, "notes.txt"), "mine");
        var before = Snapshot(mine);
        Assert.Equal(1, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/m.bin", "--out", mine, "--sha256", Convert.ToHexStringLower(SHA256.HashData(data))]));
        Assert.Equal(1, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/other.bin", "--out", mine, "--no-sidecar"]));
        Assert.Equal(before, Snapshot(mine));

        // The same pull that succeeds keeps the folder it created.
        Assert.Equal(0, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/m.bin", "--out", fresh, "--no-sidecar"]));
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(fresh, "m.bin")));
    }

    [SkippableTheory]
    [InlineData(false, "INT")]
    [InlineData(true, "INT")]
    [InlineData(true, "TERM")]
    public void Eval_interrupted_with_ctrl_c_or_sigterm_leaves_no_output(bool existing, string signal)
    {
        SkipUnlessTheSignalReachesKvaq(signal);
        using var tmp = new TempDir();
        var dir = existing ? tmp.File("mine") : Path.Combine(tmp.Path, "new", "out");
        if (existing)
        {
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "results.json"), "an earlier run");
        }

        var before = Snapshot(tmp.Path);

        // Long enough not to finish (8 chunks of 256 tokens sampled from stories3M, one thread): interrupted as soon as
        // the staging folder inside --out shows that the run got past its checks.
        string[] args = ["eval", "--model", Fixtures.Stories3M, "--task", "kl", "--data", "sampled", "--ctx", "256", "--limit", "8", "--out", dir, "--threads", "1"];
        int rc = RunAndInterrupt(args, signal, () => Directory.Exists(dir) && Directory.EnumerateDirectories(dir, "kvaq-partial-*").Any());
        Assert.Equal(ExitCodeOf(signal), rc); // ended by the signal, not finished
        if (existing)
        {
            Assert.Equal(before, Snapshot(tmp.Path));
        }
        else
        {
            Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
        }
    }

    [SkippableTheory]
    [InlineData("INT")]
    [InlineData("TERM")]
    public void Convert_interrupted_with_ctrl_c_or_sigterm_while_writing_leaves_no_partial_file(string signal)
    {
        SkipUnlessTheSignalReachesKvaq(signal);
        using var tmp = new TempDir();
        var path = tmp.File("l1b.gguf");
        File.WriteAllText(path, "an earlier file");

        // 5 GB of F32: interrupted once the writer's F.partial holds some of it.
        var partial = path + ".partial";
        int rc = RunAndInterrupt(["convert", "--synthetic", "llama-3.2-1b", "--type", "f32", "--out", path, "--threads", "1", "--json"], signal, () => File.Exists(partial) && new FileInfo(partial).Length > (1 << 20));
        Assert.Equal(ExitCodeOf(signal), rc);
        Assert.Equal([path], Directory.GetFileSystemEntries(tmp.Path));
        Assert.Equal("an earlier file", File.ReadAllText(path));
    }

    /// <summary>
    /// Runs a command that writes into the folder it is given, twice: into a new folder two levels down (nothing may be
    /// left: not the folder, not its parent) and into an existing folder holding the user's files, one named
    /// <paramref name="outputName"/> (it must be left exactly as it was). Each run must fail with <paramref name="error"/>.
    /// </summary>
    private static void AssertFolderOutputLeftAlone(string outputName, string error, Func<string, string[]> command, string? after = null)
    {
        using var tmp = new TempDir();
        AssertFails(command(Path.Combine(tmp.Path, "new", "out")), error, after);
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));

        var mine = tmp.File("mine");
        Directory.CreateDirectory(Path.Combine(mine, "sub"));
        File.WriteAllText(Path.Combine(mine, "notes.txt"), "mine");
        File.WriteAllText(Path.Combine(mine, "sub", "data.csv"), "1,2");
        File.WriteAllText(Path.Combine(mine, outputName), "an earlier run");
        var before = Snapshot(tmp.Path);
        AssertFails(command(mine), error, after);
        Assert.Equal(before, Snapshot(tmp.Path));
    }

    /// <summary>
    /// Runs a command that writes the file it is given, twice: a new file (nothing may be left in the folder) and a file
    /// that exists (it must be left as it was, with nothing beside it). Each run must fail with <paramref name="error"/>.
    /// </summary>
    private static void AssertFileOutputLeftAlone(string name, string error, Func<string, string[]> command)
    {
        using var tmp = new TempDir();
        AssertFails(command(tmp.File(name)), error);
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));

        File.WriteAllText(tmp.File(name), "an earlier run");
        var before = Snapshot(tmp.Path);
        AssertFails(command(tmp.File(name)), error);
        Assert.Equal(before, Snapshot(tmp.Path));
    }

    /// <summary>
    /// Runs kvaq, which must fail with <paramref name="error"/> on its last line of stderr, after a line containing
    /// <paramref name="after"/> when given (what the command prints once its work has started).
    /// </summary>
    private static void AssertFails(string[] args, string error, string? after = null)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run(args);
        Assert.True(rc == 1, $"rc {rc}: {stderr}");
        Assert.Equal(string.Empty, stdout);

        // The error is the last line (analyze's progress bar may print lines before it).
        var lines = stderr.TrimEnd().Split('\n');
        Assert.StartsWith("kvaq: error: ", lines[^1]);
        Assert.Contains(error, lines[^1]);
        if (after is not null)
        {
            Assert.Contains(lines[..^1], l => l.Contains(after, StringComparison.Ordinal));
        }
    }

    /// <summary>
    /// stories260K (llama2.c FP32) with every W_K weight multiplied by 10^6, written into <paramref name="dir"/>: a model
    /// that loads and runs in FP32, but whose keys (hundreds of thousands) are beyond the FP16 range that quantization accepts.
    /// </summary>
    private static string BigKeysModel(TempDir dir)
    {
        var bytes = File.ReadAllBytes(S260K);
        var header = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(bytes.AsSpan(0, 28));
        int d = header[0], layers = header[2], heads = header[3], kvHeads = header[4], vocab = Math.Abs(header[5]);
        int kvDim = d / heads * kvHeads;

        // token embedding, rms_att, wq, then wk.
        long wk = 28 + (4L * ((vocab * d) + (layers * d) + (layers * d * d)));
        var weights = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes.AsSpan((int)wk, 4 * layers * d * kvDim));
        foreach (ref var w in weights)
        {
            w *= 1e6f;
        }

        var path = dir.File("big-keys.bin");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Every file and folder under <paramref name="root"/>, relative, with the files' contents.</summary>
    private static string Snapshot(string root) => string.Join(
        "\n",
        Directory.GetFileSystemEntries(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).Select(p =>
            Path.GetRelativePath(root, p) + (File.Exists(p) ? " = " + File.ReadAllText(p) : "/")));

    /// <summary>
    /// Skips where kill(1) and /proc are missing, and a SIGINT case where this process ignores SIGINT (a test run started
    /// in the background without job control): kvaq inherits that, so Ctrl+C could not reach it either.
    /// </summary>
    private static void SkipUnlessTheSignalReachesKvaq(string signal)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "sends signals with kill(1)");
        Skip.If(signal == "INT" && KvaqProcess.SigintIgnored(), "SIGINT is ignored in this process tree (started in the background without job control); the TERM case covers the cleanup");
    }

    /// <summary>The exit code of a process ended by SIG<paramref name="signal"/>: 128 + the signal number.</summary>
    private static int ExitCodeOf(string signal) => signal == "INT" ? 130 : 143;

    /// <summary>Starts kvaq, sends it SIG<paramref name="signal"/> once <paramref name="ready"/> holds, and returns its exit code.</summary>
    private static int RunAndInterrupt(string[] args, string signal, Func<bool> ready)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kvaq.dll"));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            var clock = Stopwatch.StartNew();
            while (!ready())
            {
                if (p.HasExited)
                {
                    Assert.Fail($"kvaq ended (rc {p.ExitCode}) before it could be interrupted: {stderr.Result}");
                }

                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(120), "kvaq did not get to the point of interruption within 120 s");
                Thread.Sleep(20);
            }

            using (var kill = Process.Start("kill", ["-" + signal, p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                kill.WaitForExit();
            }

            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), $"kvaq did not end within 60 s of SIG{signal}");
            p.WaitForExit();
            _ = stdout.Result;
            return p.ExitCode;
        }
        finally
        {
            if (!p.HasExited)
            {
                p.Kill();
            }
        }
    }
}
