using System.Runtime.InteropServices;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// Makes what one run of a command writes all or nothing. A file is written under a temporary name beside it
/// (<c>NAME.partial</c>, <see cref="Temporary"/>), a set of files into a staging folder inside their folder
/// (<c>kvaq-partial-PID</c>, <see cref="Staging"/>), and <see cref="Commit"/> renames them into place; folders the run
/// creates are remembered (<see cref="CreateFolder"/>). A run that fails (disposed without <see cref="Commit"/>) or is
/// interrupted (Ctrl+C, SIGTERM, SIGHUP) deletes its temporary files and staging folders and removes the folders it created
/// that are still empty; it deletes or changes nothing that existed before it, except staging folders of killed runs (below).
/// Only a killed process (SIGKILL) can leave a <c>.partial</c> file or staging folder behind: the next run writing the same
/// file replaces its <c>.partial</c>, and the next run staging into the same folder deletes staging folders whose process
/// is gone (<see cref="RemoveStaleStaging"/>). A process that ignores SIGINT (started in the background without job
/// control) is not interrupted by it at all.
/// </summary>
internal sealed class OutputTransaction : IDisposable
{
    /// <summary>What a temporary file's name adds to the final name (as <see cref="Formats.Gguf.GgufWriter"/> writes).</summary>
    public const string PartialSuffix = ".partial";

    /// <summary>The start of a staging folder's name; the process id and a counter follow.</summary>
    public const string StagingPrefix = "kvaq-partial-";

    private readonly Lock _gate = new();
    private readonly List<string> _createdFolders = [];
    private readonly List<string> _deleteOnRollback = [];
    private readonly List<(string Temporary, string Target)> _renames = [];
    private readonly List<(string Staging, string Target)> _staged = [];
    private readonly List<PosixSignalRegistration> _signals = [];
    private State _state;

    /// <summary>Starts a transaction; until it ends, Ctrl+C, SIGTERM and SIGHUP roll it back before the process ends.</summary>
    public OutputTransaction()
    {
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP })
        {
            try
            {
                // The handler leaves context.Cancel false: the signal then ends the process as it would have.
                _signals.Add(PosixSignalRegistration.Create(signal, _ => Rollback()));
            }
            catch (PlatformNotSupportedException)
            {
            }
        }
    }

    private enum State
    {
        Open,
        Committed,
        RolledBack,
    }

    /// <summary>
    /// Checks an output file option before any work: a path (not empty, not a folder) in a folder that exists; returns
    /// <paramref name="path"/>. <paramref name="example"/> is a file name suggested when a folder is given, and
    /// <paramref name="folderHint"/> ends that message (what else a folder could mean).
    /// </summary>
    public static string CheckFile(string option, string path, string example, string folderHint = "")
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            throw new ArgumentException($"{option}: the path is empty; give the {Path.GetExtension(example)} file to write");
        }

        if (Directory.Exists(path))
        {
            throw new ArgumentException($"{option} {path}: is a folder; give a file path such as {Path.Combine(path, example)}{folderHint}");
        }

        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null && !Directory.Exists(folder))
        {
            throw new ArgumentException($"{option} {path}: the folder {folder} does not exist");
        }

        return path;
    }

    /// <summary>
    /// Checks an output folder option before any work (a name; no file in its place or among its parents; none of
    /// <paramref name="files"/>, relative paths inside it, a folder, nor any of their folders a file), creates it (a
    /// rollback removes what it created, if left empty) and returns a new staging folder inside it for <see cref="Commit"/>.
    /// Errors name the option and the path.
    /// </summary>
    public string PrepareFolder(string option, string dir, IEnumerable<string> files)
    {
        if (string.IsNullOrWhiteSpace(dir))
        {
            throw new ArgumentException($"{option}: empty folder name");
        }

        if (File.Exists(dir))
        {
            throw new ArgumentException($"{option} {dir}: is a file, not a folder");
        }

        for (var parent = Path.GetDirectoryName(Path.GetFullPath(dir)); !string.IsNullOrEmpty(parent); parent = Path.GetDirectoryName(parent))
        {
            if (File.Exists(parent))
            {
                throw new ArgumentException($"{option} {dir}: {parent} is a file, not a folder");
            }

            if (Directory.Exists(parent))
            {
                break;
            }
        }

        foreach (var f in files)
        {
            string path = Path.Combine(dir, f);
            if (Directory.Exists(path))
            {
                throw new ArgumentException($"{option} {dir}: {path} is a folder where a results file goes");
            }

            for (var sub = Path.GetDirectoryName(f); !string.IsNullOrEmpty(sub); sub = Path.GetDirectoryName(sub))
            {
                if (File.Exists(Path.Combine(dir, sub)))
                {
                    throw new ArgumentException($"{option} {dir}: {Path.Combine(dir, sub)} is a file where a results folder goes");
                }
            }
        }

        try
        {
            CreateFolder(dir);
            return Staging(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"{option} {dir}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Remembers the folders of <paramref name="dir"/> (itself and its parents) that do not exist yet, because this run
    /// is about to create them: a rollback removes those that are then empty.
    /// </summary>
    public void RemoveIfLeftEmpty(string dir)
    {
        var missing = new List<string>();
        for (var d = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)); !string.IsNullOrEmpty(d) && !Directory.Exists(d); d = Path.GetDirectoryName(d))
        {
            missing.Add(d);
        }

        lock (_gate)
        {
            ThrowIfEnded();

            // Innermost first, the order in which a rollback removes them.
            _createdFolders.AddRange(missing.Where(d => !_createdFolders.Contains(d)));
        }
    }

    /// <summary>Creates <paramref name="dir"/> and its missing parents; a rollback removes the ones created here that are left empty.</summary>
    public void CreateFolder(string dir)
    {
        RemoveIfLeftEmpty(dir);
        Directory.CreateDirectory(dir);
    }

    /// <summary>
    /// The name to write <paramref name="target"/> under: <c>target.partial</c> in the same folder. <see cref="Commit"/>
    /// renames it to <paramref name="target"/> (replacing a file of that name); a rollback deletes it.
    /// </summary>
    public string Temporary(string target)
    {
        var full = Path.GetFullPath(target);
        var temporary = full + PartialSuffix;
        lock (_gate)
        {
            ThrowIfEnded();
            _renames.Add((temporary, full));
        }

        return temporary;
    }

    /// <summary>
    /// A file or folder that something else writes and renames itself (such as the GGUF writer's <c>.partial</c>): deleted,
    /// with what it holds, by a rollback.
    /// </summary>
    public void DeleteOnRollback(string path)
    {
        lock (_gate)
        {
            ThrowIfEnded();
            _deleteOnRollback.Add(Path.GetFullPath(path));
        }
    }

    /// <summary>
    /// Creates an empty staging folder inside <paramref name="dir"/> (which must exist) and returns it: files written
    /// there, subfolders included, are moved into <paramref name="dir"/> by <see cref="Commit"/>; a rollback deletes it.
    /// </summary>
    public string Staging(string dir)
    {
        var full = Path.GetFullPath(dir);
        RemoveStaleStaging(full);
        lock (_gate)
        {
            ThrowIfEnded();
            string staging;
            int n = 0;
            do
            {
                staging = Path.Combine(full, $"{StagingPrefix}{Environment.ProcessId}{(n == 0 ? string.Empty : "-" + n)}");
                n++;
            }
            while (Directory.Exists(staging) || File.Exists(staging));

            _staged.Add((staging, full));
            Directory.CreateDirectory(staging);
            return staging;
        }
    }

    /// <summary>
    /// Deletes the staging folders in <paramref name="dir"/> left by killed runs: named <c>kvaq-partial-PID</c> or
    /// <c>kvaq-partial-PID-N</c> where no process PID runs on this machine now. Folders of running processes (this
    /// one's included) and anything else are left alone; what cannot be deleted stays. Returns how many were deleted.
    /// </summary>
    public static int RemoveStaleStaging(string dir) => RemoveStale(dir, StagingPrefix);

    /// <summary>
    /// Deletes the folders <c>NAME.partial-PID</c> beside <paramref name="target"/> (NAME its file name) that killed runs
    /// left while writing it, as <see cref="RemoveStaleStaging"/> does for staging folders. Returns how many were deleted.
    /// </summary>
    public static int RemoveStalePartialFolders(string target)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(target));
        return Path.GetDirectoryName(full) is { } parent ? RemoveStale(parent, Path.GetFileName(full) + ".partial-") : 0;
    }

    /// <summary>The process id in a staging folder's name (<c>kvaq-partial-PID</c> or <c>kvaq-partial-PID-N</c>), or null for any other name.</summary>
    internal static int? StagingProcessId(string name) => ProcessIdAfter(name, StagingPrefix);

    /// <summary>The process id in <c>PREFIXPID</c> or <c>PREFIXPID-N</c>, or null for any other name.</summary>
    internal static int? ProcessIdAfter(string name, string prefix)
    {
        if (!name.StartsWith(prefix, StringComparison.Ordinal))
        {
            return null;
        }

        var rest = name.AsSpan(prefix.Length);
        int dash = rest.IndexOf('-');
        var pidText = dash < 0 ? rest : rest[..dash];
        if (dash >= 0 && (dash == rest.Length - 1 || !int.TryParse(rest[(dash + 1)..], System.Globalization.NumberStyles.None, null, out _)))
        {
            return null;
        }

        return int.TryParse(pidText, System.Globalization.NumberStyles.None, null, out int pid) && pid > 0 ? pid : null;
    }

    private static int RemoveStale(string dir, string prefix)
    {
        if (!Directory.Exists(dir))
        {
            return 0;
        }

        int removed = 0;
        foreach (var folder in Directory.EnumerateDirectories(dir, prefix + "*").ToArray())
        {
            if (ProcessIdAfter(Path.GetFileName(folder), prefix) is int pid && !IsRunning(pid))
            {
                BestEffort(() =>
                {
                    Directory.Delete(folder, recursive: true);
                    removed++;
                });
            }
        }

        return removed;
    }

    private static bool IsRunning(int pid)
    {
        if (pid == Environment.ProcessId)
        {
            return true;
        }

        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;  // no process with that id
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>
    /// Puts every output in place: temporary files are renamed to their targets in the order they were named, then the
    /// files of each staging folder are moved into its folder (replacing files of the same names), and the staging
    /// folder is deleted. The files named in <paramref name="last"/> (relative to a staging folder's target) are the
    /// summaries: a file of that name already there is deleted first and the new one moved in at the very end, so a
    /// summary exists only once everything else is in place.
    /// </summary>
    public void Commit(params string[] last)
    {
        lock (_gate)
        {
            ThrowIfEnded();
            try
            {
                foreach (var (temporary, target) in _renames)
                {
                    File.Move(temporary, target, overwrite: true);
                }

                foreach (var (staging, target) in _staged)
                {
                    var summaries = last.Select(name => Path.Combine(staging, name)).Where(File.Exists).ToArray();
                    foreach (var summary in summaries)
                    {
                        File.Delete(Path.Combine(target, Path.GetRelativePath(staging, summary)));
                    }

                    var files = Directory.EnumerateFiles(staging, "*", SearchOption.AllDirectories)
                        .Where(f => !summaries.Contains(f))
                        .Concat(summaries)
                        .ToArray();
                    foreach (var file in files)
                    {
                        var destination = Path.Combine(target, Path.GetRelativePath(staging, file));
                        Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
                        File.Move(file, destination, overwrite: true);
                    }

                    Directory.Delete(staging, recursive: true);
                }

                _state = State.Committed;
            }
            catch
            {
                RollbackLocked();
                throw;
            }
        }
    }

    /// <summary>Rolls back unless committed, and stops watching for signals.</summary>
    public void Dispose()
    {
        Rollback();
        foreach (var s in _signals)
        {
            s.Dispose();
        }
    }

    private void Rollback()
    {
        lock (_gate)
        {
            RollbackLocked();
        }
    }

    private void RollbackLocked()
    {
        if (_state != State.Open)
        {
            return;
        }

        _state = State.RolledBack;
        foreach (var (staging, _) in _staged)
        {
            BestEffort(() =>
            {
                if (Directory.Exists(staging))
                {
                    Directory.Delete(staging, recursive: true);
                }
            });
        }

        foreach (var path in _renames.Select(r => r.Temporary).Concat(_deleteOnRollback))
        {
            BestEffort(() =>
            {
                if (Directory.Exists(path))
                {
                    Directory.Delete(path, recursive: true);
                }
                else
                {
                    File.Delete(path);
                }
            });
        }

        foreach (var dir in _createdFolders)
        {
            BestEffort(() =>
            {
                if (Directory.Exists(dir) && !Directory.EnumerateFileSystemEntries(dir).Any())
                {
                    Directory.Delete(dir);
                }
            });
        }
    }

    // A rollback runs while an error is already on its way out, or in a signal handler: what cannot be removed stays.
    private static void BestEffort(Action action)
    {
        try
        {
            action();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private void ThrowIfEnded()
    {
        if (_state != State.Open)
        {
            throw new OperationCanceledException($"the outputs of this run were already {(_state == State.Committed ? "committed" : "rolled back (interrupted)")}");
        }
    }
}
