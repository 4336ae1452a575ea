using KvAdaQuant.Cli.Commands;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <see cref="OutputTransaction"/>: outputs appear only on commit, summaries last; a rollback removes what the run made
/// (temporary files, staging folders, folders it created and left empty) and nothing that was there before.
/// </summary>
public class OutputTransactionTests
{
    [Fact]
    public void Rollback_removes_the_folders_it_created_and_keeps_those_that_existed()
    {
        using var tmp = new TempDir();
        var dir = Path.Combine(tmp.Path, "a", "b", "c");
        using (var t = new OutputTransaction())
        {
            var staging = t.PrepareFolder("--out", dir, ["results.json"]);
            File.WriteAllText(Path.Combine(staging, "results.json"), "{}");
            Assert.True(Directory.Exists(dir));
        }

        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void Rollback_keeps_a_created_folder_that_holds_something_else()
    {
        using var tmp = new TempDir();
        var dir = Path.Combine(tmp.Path, "a", "b");
        using (var t = new OutputTransaction())
        {
            var staging = t.PrepareFolder("--out", dir, ["results.json"]);
            File.WriteAllText(Path.Combine(staging, "results.json"), "{}");

            // Someone else put a file into "a" while the run went on: "a" stays, "b" (empty) goes.
            File.WriteAllText(Path.Combine(tmp.Path, "a", "theirs.txt"), "x");
        }

        Assert.Equal([Path.Combine(tmp.Path, "a"), Path.Combine(tmp.Path, "a", "theirs.txt")], Directory.GetFileSystemEntries(tmp.Path, "*", SearchOption.AllDirectories).Order());
    }

    [Fact]
    public void Rollback_leaves_an_existing_folder_and_its_files_as_they_were()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("notes.txt"), "mine");
        File.WriteAllText(tmp.File("results.json"), "old");
        using (var t = new OutputTransaction())
        {
            var staging = t.PrepareFolder("--out", tmp.Path, ["results.json"]);
            File.WriteAllText(Path.Combine(staging, "results.json"), "new");
            File.WriteAllText(t.Temporary(tmp.File("plan.json")), "half");
        }

        Assert.Equal([tmp.File("notes.txt"), tmp.File("results.json")], Directory.GetFileSystemEntries(tmp.Path).Order());
        Assert.Equal("mine", File.ReadAllText(tmp.File("notes.txt")));
        Assert.Equal("old", File.ReadAllText(tmp.File("results.json")));
    }

    [Fact]
    public void Commit_moves_staged_files_and_subfolders_in_and_renames_temporary_files()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("results.json"), "old");
        File.WriteAllText(tmp.File("plan.json"), "old plan");
        File.WriteAllText(tmp.File("notes.txt"), "mine");
        using (var t = new OutputTransaction())
        {
            var staging = t.PrepareFolder("--out", tmp.Path, ["results.json", Path.Combine("analysis", "analysis.json")]);
            Assert.Equal(tmp.Path, Path.GetDirectoryName(staging));
            Assert.StartsWith(OutputTransaction.StagingPrefix, Path.GetFileName(staging));
            File.WriteAllText(Path.Combine(staging, "results.json"), "new");
            Directory.CreateDirectory(Path.Combine(staging, "analysis"));
            File.WriteAllText(Path.Combine(staging, "analysis", "analysis.json"), "{}");
            var temporary = t.Temporary(tmp.File("plan.json"));
            Assert.Equal(tmp.File("plan.json") + OutputTransaction.PartialSuffix, temporary);
            File.WriteAllText(temporary, "new plan");
            Assert.Equal("old", File.ReadAllText(tmp.File("results.json")));
            t.Commit("results.json");
        }

        Assert.Equal(
            [tmp.File("analysis"), tmp.File(Path.Combine("analysis", "analysis.json")), tmp.File("notes.txt"), tmp.File("plan.json"), tmp.File("results.json")],
            Directory.GetFileSystemEntries(tmp.Path, "*", SearchOption.AllDirectories).Order());
        Assert.Equal("new", File.ReadAllText(tmp.File("results.json")));
        Assert.Equal("new plan", File.ReadAllText(tmp.File("plan.json")));
        Assert.Equal("mine", File.ReadAllText(tmp.File("notes.txt")));
    }

    [Fact]
    public void A_commit_that_fails_midway_leaves_no_summary_and_no_staging_folder()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("results.json"), "old summary");
        using var t = new OutputTransaction();
        var staging = t.PrepareFolder("--out", tmp.Path, ["results.json", "results.csv"]);
        File.WriteAllText(Path.Combine(staging, "results.csv"), "a,b");
        File.WriteAllText(Path.Combine(staging, "results.md"), "| a |");
        File.WriteAllText(Path.Combine(staging, "results.json"), "new summary");

        // results.md cannot be moved in (a folder took its name after the checks): the old summary was removed before
        // anything moved and the new one is never moved in, so the folder does not look complete.
        Directory.CreateDirectory(tmp.File("results.md"));
        Assert.ThrowsAny<IOException>(() => t.Commit("results.json"));
        Assert.False(File.Exists(tmp.File("results.json")));
        Assert.False(Directory.Exists(staging));
    }

    [Fact]
    public void Files_named_for_rollback_are_deleted_by_it_and_kept_by_a_commit()
    {
        using var tmp = new TempDir();
        using (var t = new OutputTransaction())
        {
            t.DeleteOnRollback(tmp.File("m.gguf.partial"));
            File.WriteAllText(tmp.File("m.gguf.partial"), "half");
        }

        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
        using (var t = new OutputTransaction())
        {
            t.DeleteOnRollback(tmp.File("m.gguf.partial"));
            File.WriteAllText(tmp.File("m.gguf"), "whole");
            t.Commit();
        }

        Assert.Equal("whole", File.ReadAllText(tmp.File("m.gguf")));
    }

    [Fact]
    public void A_folder_named_for_rollback_is_deleted_with_what_it_holds()
    {
        using var tmp = new TempDir();
        var partial = tmp.File("hf.partial-1");
        using (var t = new OutputTransaction())
        {
            t.DeleteOnRollback(partial);
            Directory.CreateDirectory(partial);
            File.WriteAllText(Path.Combine(partial, "config.json"), "{}");
        }

        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void Nothing_can_be_added_after_the_end()
    {
        using var tmp = new TempDir();
        var t = new OutputTransaction();
        t.Commit();
        Assert.Throws<OperationCanceledException>(() => t.Temporary(tmp.File("x")));
        Assert.Throws<OperationCanceledException>(() => t.Commit());
        t.Dispose();
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Theory]
    [InlineData("", "--out: the path is empty; give the .json file to write")]
    [InlineData("{dir}", "--out {dir}: is a folder; give a file path such as {dir}/plan.json")]
    [InlineData("{dir}/no/such/plan.json", "--out {dir}/no/such/plan.json: the folder {dir}/no/such does not exist")]
    public void CheckFile_names_a_path_that_cannot_be_written(string path, string message)
    {
        using var tmp = new TempDir();
        var e = Assert.Throws<ArgumentException>(() => OutputTransaction.CheckFile("--out", path.Replace("{dir}", tmp.Path), "plan.json"));
        Assert.Equal(message.Replace("{dir}", tmp.Path), e.Message);
        Assert.Equal(tmp.File("plan.json"), OutputTransaction.CheckFile("--out", tmp.File("plan.json"), "plan.json"));
    }

    [Fact]
    public void PrepareFolder_refuses_a_file_where_a_results_folder_goes_before_creating_anything()
    {
        using var tmp = new TempDir();
        var dir = tmp.File("out");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "analysis"), "x");
        using var t = new OutputTransaction();
        var e = Assert.Throws<ArgumentException>(() => t.PrepareFolder("--out", dir, [Path.Combine("analysis", "analysis.json")]));
        Assert.Equal($"--out {dir}: {Path.Combine(dir, "analysis")} is a file where a results folder goes", e.Message);
        Assert.Equal([Path.Combine(dir, "analysis")], Directory.GetFileSystemEntries(dir));
    }

    [Fact]
    public void The_next_run_in_a_folder_deletes_staging_folders_of_killed_processes_only()
    {
        WithAKilledAndARunningProcess((tmp, killed, alive) =>
        {
            string[] stale = [$"kvaq-partial-{killed}", $"kvaq-partial-{killed}-3"];
            string[] kept = [$"kvaq-partial-{alive}", $"kvaq-partial-{Environment.ProcessId}-7", "kvaq-partial-notes", $"kvaq-partial-{killed}-x"];
            foreach (var name in stale.Concat(kept))
            {
                Directory.CreateDirectory(Path.Combine(tmp, name, "sub"));
                File.WriteAllText(Path.Combine(tmp, name, "sub", "results.json"), "{}");
            }

            using (var t = new OutputTransaction())
            {
                var staging = t.PrepareFolder("--out", tmp, ["results.json"]);
                File.WriteAllText(Path.Combine(staging, "results.json"), "new");
                t.Commit("results.json");
            }

            var left = Directory.GetDirectories(tmp).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
            Assert.Equal(kept.Order(StringComparer.Ordinal).ToArray(), left);
            Assert.Equal("new", File.ReadAllText(Path.Combine(tmp, "results.json")));
        });
    }

    [Theory]
    [InlineData("kvaq-partial-123", 123)]
    [InlineData("kvaq-partial-123-4", 123)]
    [InlineData("kvaq-partial-", null)]
    [InlineData("kvaq-partial-0", null)]
    [InlineData("kvaq-partial-12a", null)]
    [InlineData("kvaq-partial-12-", null)]
    [InlineData("kvaq-partial-12-x", null)]
    [InlineData("kvaq-partial--12", null)]
    [InlineData("kvaq-partial-99999999999", null)]
    [InlineData("other-123", null)]
    public void A_staging_folder_name_gives_its_process_id(string name, int? pid) =>
        Assert.Equal(pid, OutputTransaction.StagingProcessId(name));

    [Fact]
    public void Partial_folders_of_killed_conversions_beside_the_target_are_deleted_and_others_kept()
    {
        WithAKilledAndARunningProcess((tmp, killed, alive) =>
        {
            string[] stale = [$"out.partial-{killed}"];
            string[] kept = [$"out.partial-{alive}", $"other.partial-{killed}", "out.partial-x", "out"];
            foreach (var name in stale.Concat(kept))
            {
                Directory.CreateDirectory(Path.Combine(tmp, name));
                File.WriteAllText(Path.Combine(tmp, name, "model.safetensors"), "x");
            }

            Assert.Equal(1, OutputTransaction.RemoveStalePartialFolders(Path.Combine(tmp, "out") + "/"));
            var left = Directory.GetDirectories(tmp).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
            Assert.Equal(kept.Order(StringComparer.Ordinal).ToArray(), left);
        });
    }

    /// <summary>
    /// Runs <paramref name="test"/> with a temporary folder, the id of a process that was killed and reaped, and the id of
    /// one that runs (both sleep(1)); skipped on Windows.
    /// </summary>
    private static void WithAKilledAndARunningProcess(Action<string, int, int> test)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        using var tmp = new TempDir();
        using var killed = System.Diagnostics.Process.Start("sleep", "60");
        using var alive = System.Diagnostics.Process.Start("sleep", "60");
        try
        {
            killed.Kill();
            killed.WaitForExit();
            test(tmp.Path, killed.Id, alive.Id);
        }
        finally
        {
            alive.Kill();
            alive.WaitForExit();
        }
    }
}
