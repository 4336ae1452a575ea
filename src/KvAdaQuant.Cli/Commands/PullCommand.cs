using System.CommandLine;
using KvAdaQuant.Cli.Download;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq pull &lt;url&gt;</c>: download a model file, resumable and checksum-verified.</summary>
internal static class PullCommand
{
    public static Command Create()
    {
        var url = new Argument<string>("url") { Description = "http(s) URL of the file; saved under its last path segment" };
        var outDir = new Option<string?>("--out", "-o") { Description = "folder to save into (default: $KVAQ_MODELS, else the current folder)" };
        var sha = new Option<string?>("--sha256") { Description = "expected SHA-256 (hex); default: read URL.sha256 if the server has it" };
        var retries = new Option<int>("--retries") { Description = "reconnect attempts after a dropped connection", DefaultValueFactory = _ => 5 };
        var readTimeout = new Option<double>("--read-timeout") { Description = "seconds without data after which a connection counts as dropped (and is resumed)", DefaultValueFactory = _ => 60 };
        var noSidecar = new Option<bool>("--no-sidecar") { Description = "do not look for URL.sha256 (the file is then verified only with --sha256)" };
        var json = CommonOptions.Json();
        var cmd = new Command("pull", "Download a model file (resumable with HTTP Range into NAME.part, SHA-256 verified).")
        {
            url, outDir, sha, retries, readTimeout, noSidecar, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            var text = r.GetValue(url)!;
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri))
            {
                throw new ArgumentException($"<url> '{text}' is not an absolute URL");
            }

            string? expected = r.GetValue(sha) is { } s ? ResumableDownloader.ParseSha256(s, "--sha256") : null;
            int n = r.GetValue(retries);
            if (n < 0)
            {
                throw new ArgumentException($"--retries must be >= 0, got {n}");
            }

            double idle = r.GetValue(readTimeout);
            if (!(idle > 0 && idle <= 86_400))
            {
                throw new ArgumentException($"--read-timeout must be in (0, 86400] seconds, got {idle}");
            }

            var env = Environment.GetEnvironmentVariable("KVAQ_MODELS");
            var dir = r.GetValue(outDir) ?? (string.IsNullOrEmpty(env) ? Directory.GetCurrentDirectory() : env);
            if (string.IsNullOrWhiteSpace(dir))
            {
                throw new ArgumentException("--out: empty folder name");
            }

            // A failed or interrupted pull keeps NAME.part (the next pull resumes it) but removes the folders it created
            // for it when nothing was written into them.
            using var output = new OutputTransaction();
            output.RemoveIfLeftEmpty(dir);
            using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(30) };
            var downloader = new ResumableDownloader(http, Console.Error) { MaxRetries = n, ReadTimeoutSeconds = idle, UseSidecar = !r.GetValue(noSidecar) };
            DownloadResult result;
            try
            {
                result = downloader.DownloadAsync(uri, dir, expected).GetAwaiter().GetResult();
            }
            catch (HttpRequestException e)
            {
                throw new IOException(e.Message, e);
            }

            output.Commit();
            if (r.GetValue(json))
            {
                CliRunner.PrintJson(result);
            }
            else
            {
                Console.Out.WriteLine($"{result.Path}: {result.Bytes} bytes, sha256 {result.Sha256} ({(result.Verified ? "verified against " + result.ChecksumSource : "not verified")}{(result.AlreadyPresent ? ", already present" : string.Empty)}{(result.ResumedFrom > 0 ? $", resumed from byte {result.ResumedFrom}" : string.Empty)})");
            }

            return 0;
        }));
        return cmd;
    }
}
