using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;

namespace KvAdaQuant.Cli.Download;

/// <summary>
/// Downloads one file over HTTP(S) into <c>NAME.part</c>, resuming with a <c>Range</c> request when a partial file
/// exists or the connection drops, then checks its SHA-256 (given, or read from the sidecar <c>URL.sha256</c>) and
/// renames it to <c>NAME</c>. A checksum mismatch deletes the partial file and fails. A connection that sends nothing
/// for <see cref="ReadTimeoutSeconds"/> counts as dropped (resumed like one).
/// </summary>
public sealed class ResumableDownloader
{
    private readonly HttpClient _http;
    private readonly TextWriter _progress;

    /// <summary>Creates a downloader using <paramref name="http"/>, writing progress lines to <paramref name="progress"/>.</summary>
    public ResumableDownloader(HttpClient http, TextWriter progress)
    {
        _http = http;
        _progress = progress;
    }

    /// <summary>Attempts after a dropped connection before giving up.</summary>
    public int MaxRetries { get; init; } = 5;

    /// <summary>Seconds a request may wait for its response headers or for the next bytes of the body before it is
    /// dropped and resumed.</summary>
    public double ReadTimeoutSeconds { get; init; } = 60;

    /// <summary>Whether to look for the <c>URL.sha256</c> sidecar when no checksum is given.</summary>
    public bool UseSidecar { get; init; } = true;

    /// <summary>The largest sidecar body read (a checksum line is under 200 bytes).</summary>
    public const int MaxSidecarBytes = 4096;

    /// <summary>Seconds between progress lines.</summary>
    public double ProgressIntervalSeconds { get; init; } = 1.0;

    /// <summary>The file name a URL is saved under (its last path segment).</summary>
    public static string FileNameOf(Uri url)
    {
        var name = Uri.UnescapeDataString(url.AbsolutePath.Split('/').LastOrDefault() ?? string.Empty);
        if (name.Length == 0 || name is "." or ".." || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
        {
            throw new ArgumentException($"<url> {url}: cannot take a file name from its path; give a URL ending in the file name");
        }

        return name;
    }

    /// <summary>Parses a hex SHA-256 (64 hex digits); throws naming <paramref name="what"/> otherwise.</summary>
    public static string ParseSha256(string text, string what)
    {
        var hex = text.Trim().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? string.Empty;
        if (hex.Length != 64 || !hex.All(Uri.IsHexDigit))
        {
            throw new ArgumentException($"{what}: expected a SHA-256 of 64 hex digits, found '{(hex.Length > 80 ? hex[..80] + "..." : hex)}'");
        }

        return hex.ToLowerInvariant();
    }

    /// <summary>
    /// The sidecar checksum URL of <paramref name="url"/>: ".sha256" appended to its path, the query kept
    /// (<c>https://h/m.gguf?download=true</c> -> <c>https://h/m.gguf.sha256?download=true</c>).
    /// </summary>
    public static Uri SidecarOf(Uri url) => new UriBuilder(url) { Path = url.AbsolutePath + ".sha256" }.Uri;

    /// <summary>Downloads <paramref name="url"/> into <paramref name="outDir"/>.</summary>
    public async Task<DownloadResult> DownloadAsync(Uri url, string outDir, string? expectedSha256, CancellationToken ct = default)
    {
        if (url.Scheme is not ("http" or "https"))
        {
            throw new ArgumentException($"<url> {url}: only http and https URLs can be pulled");
        }

        if (File.Exists(outDir))
        {
            throw new ArgumentException($"--out {outDir} is a file; give the folder to save into");
        }

        Directory.CreateDirectory(outDir);
        var name = FileNameOf(url);
        var final = Path.Combine(outDir, name);
        var part = final + ".part";
        string source = "option";
        if (expectedSha256 is null && UseSidecar)
        {
            expectedSha256 = await FetchSidecarAsync(url, ct);
            source = expectedSha256 is null ? "none" : "sidecar";
        }

        if (File.Exists(final))
        {
            var have = await HashFileAsync(final, ct);
            if (expectedSha256 is not null && have != expectedSha256)
            {
                throw new InvalidDataException($"{final} already exists but its SHA-256 is {have}, expected {expectedSha256} ({source}); delete it to download again");
            }

            return new DownloadResult(final, new FileInfo(final).Length, have, expectedSha256 is not null, source, 0, 0, true);
        }

        long resumedFrom = File.Exists(part) ? new FileInfo(part).Length : 0;
        int requests = 0;
        int failures = 0;
        while (true)
        {
            requests++;
            try
            {
                if (await TransferAsync(url, part, ct))
                {
                    break;
                }
            }
            catch (Exception e) when (e is IOException or HttpRequestException { StatusCode: null } or TaskCanceledException && !ct.IsCancellationRequested)
            {
                failures++;
                if (failures > MaxRetries)
                {
                    throw new IOException($"{url}: download failed {failures} times, last: {e.Message}; {part} keeps {LengthOf(part)} bytes and is resumed by the next pull", e);
                }

                _progress.WriteLine($"kvaq pull: connection lost at {LengthOf(part)} bytes ({e.Message}); resuming ({failures}/{MaxRetries})");
                await Task.Delay(TimeSpan.FromMilliseconds(200 * failures), ct);
            }
        }

        var sha = await HashFileAsync(part, ct);
        if (expectedSha256 is not null && sha != expectedSha256)
        {
            File.Delete(part);
            throw new InvalidDataException($"{url}: checksum mismatch: downloaded SHA-256 {sha}, expected {expectedSha256} ({(source == "option" ? "--sha256" : SidecarOf(url).ToString())}); the partial file was deleted");
        }

        File.Move(part, final, overwrite: false);
        if (expectedSha256 is null)
        {
            _progress.WriteLine($"kvaq pull: warning: no checksum given (--sha256) and {(UseSidecar ? $"no {SidecarOf(url)} sidecar" : "--no-sidecar")}; SHA-256 is {sha}, not verified");
        }

        return new DownloadResult(final, new FileInfo(final).Length, sha, expectedSha256 is not null, source, resumedFrom, requests, false);
    }

    private static long LengthOf(string path) => File.Exists(path) ? new FileInfo(path).Length : 0;

    private static async Task<string> HashFileAsync(string path, CancellationToken ct)
    {
        await using var fs = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(fs, ct));
    }

    private async Task<string?> FetchSidecarAsync(Uri url, CancellationToken ct)
    {
        var sidecar = SidecarOf(url);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(ReadTimeoutSeconds));
        try
        {
            using var response = await _http.GetAsync(sidecar, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            if (response.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.Forbidden or HttpStatusCode.Gone)
            {
                // (Object stores answer 403 for a key that does not exist.)
                return null;
            }

            if (!response.IsSuccessStatusCode)
            {
                throw new HttpRequestException($"{sidecar}: HTTP {(int)response.StatusCode} {response.ReasonPhrase} (pass --sha256, or --no-sidecar to skip the checksum)", null, response.StatusCode);
            }

            // A checksum line is short: read at most MaxSidecarBytes + 1, so a server that answers every path with the
            // model itself is not read whole.
            await using var body = await response.Content.ReadAsStreamAsync(timeout.Token);
            var buffer = new byte[MaxSidecarBytes + 1];
            int got = 0, n;
            while (got < buffer.Length && (n = await body.ReadAsync(buffer.AsMemory(got), timeout.Token)) > 0)
            {
                got += n;
            }

            if (got > MaxSidecarBytes)
            {
                throw new InvalidDataException($"{sidecar}: not a checksum file (over {MaxSidecarBytes} bytes); pass --sha256, or --no-sidecar to skip the checksum");
            }

            var text = System.Text.Encoding.ASCII.GetString(buffer, 0, got);
            try
            {
                return ParseSha256(text, sidecar.ToString());
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{e.Message}; pass --sha256, or --no-sidecar to skip the checksum", e);
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new IOException($"{sidecar}: no answer within {ReadTimeoutSeconds:0.#} s (--read-timeout)");
        }
    }

    /// <summary>One request: appends to <paramref name="part"/>; true when the file is complete.</summary>
    private async Task<bool> TransferAsync(Uri url, string part, CancellationToken ct)
    {
        long have = LengthOf(part);
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (have > 0)
        {
            request.Headers.Range = new RangeHeaderValue(have, null);
        }

        // One token for the whole request, pushed back after every read: it fires only when the server sends nothing
        // for ReadTimeoutSeconds (HttpClient.Timeout does not cover a body read with ResponseHeadersRead).
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var limit = TimeSpan.FromSeconds(ReadTimeoutSeconds);
        idle.CancelAfter(limit);
        try
        {
            return await TransferAsync(url, part, have, request, idle, limit, ct);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new IOException($"no data for {ReadTimeoutSeconds:0.#} s (--read-timeout)");
        }
    }

    private async Task<bool> TransferAsync(Uri url, string part, long have, HttpRequestMessage request, CancellationTokenSource idle, TimeSpan limit, CancellationToken ct)
    {
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, idle.Token);
        long? total;
        FileMode mode;
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
        {
            // Everything is already here when the server's length equals ours.
            total = response.Content.Headers.ContentRange?.Length;
            if (total == have)
            {
                return true;
            }

            throw new InvalidDataException($"{url}: server refused to resume at byte {have} (file length {total?.ToString(CultureInfo.InvariantCulture) ?? "unknown"}); delete {part} to start over");
        }

        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"{url}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
        }

        if (response.StatusCode == HttpStatusCode.PartialContent)
        {
            var range = response.Content.Headers.ContentRange;
            if (range?.From != have)
            {
                throw new InvalidDataException($"{url}: asked to resume at byte {have} but the server sent a range starting at {range?.From}");
            }

            total = range.Length;
            mode = FileMode.Append;
        }
        else
        {
            if (have > 0)
            {
                _progress.WriteLine($"kvaq pull: server does not support resuming; starting over");
            }

            have = 0;
            total = response.Content.Headers.ContentLength;
            mode = FileMode.Create;
        }

        await using (var file = new FileStream(part, mode, FileAccess.Write, FileShare.None, 1 << 16))
        await using (var body = await response.Content.ReadAsStreamAsync(idle.Token))
        {
            var buffer = new byte[1 << 16];
            long done = have;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            double lastReport = 0;
            long lastBytes = done;
            int n;
            while ((n = await body.ReadAsync(buffer, idle.Token)) > 0)
            {
                idle.CancelAfter(limit);
                await file.WriteAsync(buffer.AsMemory(0, n), ct);
                done += n;
                double now = clock.Elapsed.TotalSeconds;
                if (now - lastReport >= ProgressIntervalSeconds)
                {
                    double rate = (done - lastBytes) / Math.Max(now - lastReport, 1e-9) / (1 << 20);
                    string of = total is { } t ? $" / {t / 1048576.0:F1} MiB ({100.0 * done / t:F1}%)" : string.Empty;
                    _progress.WriteLine($"kvaq pull: {done / 1048576.0:F1} MiB{of} at {rate:F1} MiB/s");
                    lastReport = now;
                    lastBytes = done;
                }
            }
        }

        long got = LengthOf(part);
        if (total is { } expected && got < expected)
        {
            throw new IOException($"connection closed after {got} of {expected} bytes");
        }

        return true;
    }
}
