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
        // The emulated cache refuses per-channel specs when the first only-K pass builds it: after the capture and the spectra.
        AssertFolderOutputLeftAlone(
            "report.html",
            "the analysis cache emulates per-token specs without residual window or sinks only",
            dir => ["analyze", "--model", S260K, "--data", Ptb, "--tokens", "16", "--kv-bits", "2", "--axis", "channel", "--group", "4", "--emulated-cache", "--out", dir, "--threads", "1"]);
    }

    [Fact]
    public void Demo_that_fails_at_allocation_leaves_no_analysis_behind()
    {
        // The analysis is written (it used to go straight into analysis/) before the first plan finds the budget too small.
        AssertFolderOutputLeftAlone(
            "report.md",
            "--budget 2: even K4V4 costs 8 bits per element",
            dir => ["demo", "--model", S260K, "--budget", "2", "--bit-range", "4,8", "--ctx", "16", "--chunks", "1", "--calib-tokens", "16", "--out", dir, "--threads", "1", "--json"]);
    }

    [Fact]
    public void Allocate_that_fails_after_measuring_writes_no_plan()
    {
        AssertFileOutputLeftAlone(
            "plan.json",
            "--budget 2: even the lowest width 4 everywhere costs 8 bits per element",
            path => ["allocate", "--model", S260K, "--policy", "norm-aware", "--budget", "2", "--bit-range", "4,8", "--calib-tokens", "16", "--out", path, "--threads", "1"]);
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
    private static void AssertFolderOutputLeftAlone(string outputName, string error, Func<string, string[]> command)
    {
        using var tmp = new TempDir();
        AssertFails(command(Path.Combine(tmp.Path, "new", "out")), error);
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));

        var mine = tmp.File("mine");
        Directory.CreateDirectory(Path.Combine(mine, "sub"));
        File.WriteAllText(Path.Combine(mine, "notes.txt"), "mine");
        File.WriteAllText(Path.Combine(mine, "sub", "data.csv"), "1,2");
        File.WriteAllText(Path.Combine(mine, outputName), "an earlier run");
        var before = Snapshot(tmp.Path);
        AssertFails(command(mine), error);
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

    private static void AssertFails(string[] args, string error)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run(args);
        Assert.True(rc == 1, $"rc {rc}: {stderr}");
        Assert.Equal(string.Empty, stdout);

        // The error is the last line (analyze's progress bar may print lines before it).
        var last = stderr.TrimEnd().Split('\n')[^1];
        Assert.StartsWith("kvaq: error: ", last);
        Assert.Contains(error, last);
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
        var ignored = File.ReadLines("/proc/self/status").Single(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        ulong mask = ulong.Parse(ignored["SigIgn:".Length..].Trim(), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
        Skip.If(signal == "INT" && (mask & 2) != 0, "SIGINT is ignored in this process tree (started in the background without job control); the TERM case covers the cleanup");
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
