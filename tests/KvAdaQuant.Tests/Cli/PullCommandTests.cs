using System.Security.Cryptography;
using KvAdaQuant.Cli.Download;

namespace KvAdaQuant.Tests.Cli;

/// <summary><c>kvaq pull</c> against a local HTTP server: resume with Range, checksum from option or sidecar.</summary>
public class PullCommandTests
{
    private static byte[] Content(int n = 1 << 20)
    {
        var data = new byte[n];
        new Random(1234).NextBytes(data);
        return data;
    }

    private static string Sha(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));

    private static ResumableDownloader Downloader(HttpClient http) => new(http, TextWriter.Null) { MaxRetries = 5 };

    [Fact]
    public async Task DownloadsAndVerifiesAgainstSidecar()
    {
        using var server = new LocalHttpServer();
        using var dir = new TempDir();
        var data = Content();
        server.Serve("/models/tiny.gguf", data);
        server.Serve("/models/tiny.gguf.sha256", System.Text.Encoding.ASCII.GetBytes(Sha(data) + "  tiny.gguf\n"));
        using var http = new HttpClient();
        var result = await Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/models/tiny.gguf"), dir.Path, null);
        Assert.Equal(dir.File("tiny.gguf"), result.Path);
        Assert.Equal(data, File.ReadAllBytes(result.Path));
        Assert.True(result.Verified);
        Assert.Equal("sidecar", result.ChecksumSource);
        Assert.Equal(Sha(data), result.Sha256);
        Assert.False(File.Exists(dir.File("tiny.gguf.part")));
        Assert.Equal(1, result.Requests);
    }

    [Fact]
    public async Task InterruptedDownloadResumesWithRange()
    {
        using var server = new LocalHttpServer { DropAfterBytes = 200_000 };
        using var dir = new TempDir();
        var data = Content();
        server.Serve("/m.bin", data);
        server.DropNext(2);
        using var http = new HttpClient();
        var result = await Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/m.bin"), dir.Path, Sha(data));
        Assert.Equal(data, File.ReadAllBytes(result.Path));
        Assert.True(result.Verified);
        Assert.Equal(3, result.Requests);
        var ranges = server.Requests.Where(r => r.Path == "/m.bin").Select(r => r.Range).ToArray();
        Assert.Equal(3, ranges.Length);
        Assert.Equal(string.Empty, ranges[0]);

        // Each resume starts where the data on disk ended (at least the bytes sent before the drop).
        long r1 = long.Parse(ranges[1][6..^1], System.Globalization.CultureInfo.InvariantCulture);
        long r2 = long.Parse(ranges[2][6..^1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(r1, 1, 200_000);
        Assert.InRange(r2, r1 + 1, r1 + 200_000);
    }

    [Fact]
    public async Task PartFileFromAnEarlierRunIsResumed()
    {
        using var server = new LocalHttpServer();
        using var dir = new TempDir();
        var data = Content();
        server.Serve("/m.bin", data);
        File.WriteAllBytes(dir.File("m.bin.part"), data[..300_000]);
        using var http = new HttpClient();
        var result = await Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/m.bin"), dir.Path, Sha(data));
        Assert.Equal(300_000, result.ResumedFrom);
        Assert.Equal(["bytes=300000-"], server.Requests.Select(r => r.Range).ToArray());
        Assert.Equal(data, File.ReadAllBytes(result.Path));
    }

    [Fact]
    public async Task ServerWithoutRangeSupportRestartsFromScratch()
    {
        using var server = new LocalHttpServer { SupportsRange = false };
        using var dir = new TempDir();
        var data = Content();
        server.Serve("/m.bin", data);
        File.WriteAllBytes(dir.File("m.bin.part"), new byte[1000]); // garbage that must not survive
        using var http = new HttpClient();
        var result = await Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/m.bin"), dir.Path, Sha(data));
        Assert.Equal(data, File.ReadAllBytes(result.Path));
    }

    [Fact]
    public async Task ChecksumMismatchFailsAndDeletesThePartialFile()
    {
        using var server = new LocalHttpServer();
        using var dir = new TempDir();
        var data = Content(50_000);
        server.Serve("/m.bin", data);
        var wrong = new string('0', 64);
        using var http = new HttpClient();
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/m.bin"), dir.Path, wrong));
        Assert.Contains("checksum mismatch", e.Message);
        Assert.Contains(Sha(data), e.Message);
        Assert.Contains(wrong, e.Message);
        Assert.False(File.Exists(dir.File("m.bin")));
        Assert.False(File.Exists(dir.File("m.bin.part")));
    }

    [Fact]
    public async Task ExistingFileIsVerifiedNotDownloaded()
    {
        using var server = new LocalHttpServer();
        using var dir = new TempDir();
        var data = Content(10_000);
        server.Serve("/m.bin", data);
        File.WriteAllBytes(dir.File("m.bin"), data);
        using var http = new HttpClient();
        var result = await Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/m.bin"), dir.Path, Sha(data));
        Assert.True(result.AlreadyPresent);
        Assert.Empty(server.Requests);
    }

    [Fact]
    public void CommandLineDownloadsAndRejectsBadOptions()
    {
        using var server = new LocalHttpServer();
        using var dir = new TempDir();
        var data = Content(20_000);
        server.Serve("/m.bin", data);
        Assert.Equal(0, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/m.bin", "--out", dir.Path, "--sha256", Sha(data).ToUpperInvariant()]));
        Assert.Equal(data, File.ReadAllBytes(dir.File("m.bin")));
        Assert.Equal(1, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/m.bin", "--out", dir.Path, "--sha256", "xyz"]));
        Assert.Equal(1, KvAdaQuant.Cli.Program.Main(["pull", "ftp://example.org/m.bin", "--out", dir.Path]));
        Assert.Equal(1, KvAdaQuant.Cli.Program.Main(["pull", server.BaseUrl + "/missing.bin", "--out", dir.Path]));
    }

    [Fact]
    public async Task SidecarOfAUrlWithAQueryKeepsTheQuery()
    {
        Assert.Equal("https://h.example/r/m.gguf.sha256?download=true", ResumableDownloader.SidecarOf(new Uri("https://h.example/r/m.gguf?download=true")).ToString());
        using var server = new LocalHttpServer();
        using var dir = new TempDir();
        var data = Content(50_000);
        server.Serve("/m.gguf?download=1", data);
        server.Serve("/m.gguf.sha256?download=1", System.Text.Encoding.ASCII.GetBytes(Sha(data) + "\n"));
        using var http = new HttpClient();
        var result = await Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/m.gguf?download=1"), dir.Path, null);
        Assert.True(result.Verified);
        Assert.Equal("sidecar", result.ChecksumSource);
        Assert.Equal(data, File.ReadAllBytes(dir.File("m.gguf")));
    }

    [Fact]
    public async Task ASidecarThatIsNotAChecksumFailsWithoutReadingItWhole()
    {
        // A server that answers every path with the model: the "sidecar" is megabytes of binary.
        using var server = new LocalHttpServer();
        using var dir = new TempDir();
        var data = Content();
        server.Serve("/m.gguf", data);
        server.Serve("/m.gguf.sha256", data);
        using var http = new HttpClient();
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/m.gguf"), dir.Path, null));
        Assert.Contains("m.gguf.sha256: not a checksum file (over 4096 bytes)", e.Message);
        Assert.Contains("--no-sidecar", e.Message);

        // --no-sidecar downloads it, unverified; a forbidden sidecar (object stores' "no such key") counts as none.
        var unverified = await new ResumableDownloader(http, TextWriter.Null) { UseSidecar = false }.DownloadAsync(new Uri(server.BaseUrl + "/m.gguf"), dir.Path, null);
        Assert.False(unverified.Verified);
        Assert.Equal(data, File.ReadAllBytes(unverified.Path));
        server.Serve("/n.gguf", data);
        server.Status("/n.gguf.sha256", 403);
        var forbidden = await Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/n.gguf"), dir.Path, null);
        Assert.Equal("none", forbidden.ChecksumSource);
        server.Serve("/o.gguf", data);
        server.Status("/o.gguf.sha256", 500);
        var failed = await Assert.ThrowsAsync<HttpRequestException>(() => Downloader(http).DownloadAsync(new Uri(server.BaseUrl + "/o.gguf"), dir.Path, null));
        Assert.Contains("o.gguf.sha256: HTTP 500", failed.Message);
    }

    [Fact]
    public async Task AStalledTransferIsDroppedAfterTheReadTimeoutAndResumed()
    {
        using var server = new LocalHttpServer { DropAfterBytes = 100_000 };
        using var dir = new TempDir();
        var data = Content();
        server.Serve("/m.bin", data);
        server.StallNext(1);
        using var http = new HttpClient();
        var progress = new StringWriter();
        var downloader = new ResumableDownloader(http, progress) { ReadTimeoutSeconds = 1 };
        using var guard = new CancellationTokenSource(TimeSpan.FromSeconds(60)); // a regression fails here instead of hanging
        var result = await downloader.DownloadAsync(new Uri(server.BaseUrl + "/m.bin"), dir.Path, Sha(data), guard.Token);
        Assert.Equal(data, File.ReadAllBytes(result.Path));
        Assert.Equal(2, result.Requests);
        Assert.Contains("connection lost at 100000 bytes (no data for 1 s (--read-timeout)); resuming (1/5)", progress.ToString());
        var ranges = server.Requests.Where(r => r.Path == "/m.bin").Select(r => r.Range).ToArray();
        Assert.Equal(string.Empty, ranges[0]);
        Assert.StartsWith("bytes=", ranges[1]);
    }

    [Fact]
    public async Task OutThatIsAFileAndABadReadTimeoutAreRefused()
    {
        using var dir = new TempDir();
        var file = dir.File("taken");
        File.WriteAllText(file, "x");
        using var http = new HttpClient();
        var e = await Assert.ThrowsAsync<ArgumentException>(() => Downloader(http).DownloadAsync(new Uri("http://127.0.0.1:9/m.bin"), file, "0"));
        Assert.Contains($"--out {file} is a file; give the folder to save into", e.Message);
        var (rc, _, stderr) = KvaqProcess.Run("pull", "http://127.0.0.1:9/m.bin", "--out", dir.Path, "--read-timeout", "0");
        Assert.Equal(1, rc);
        Assert.Contains("--read-timeout must be in (0, 86400] seconds, got 0", stderr);
    }

    [Fact]
    public void Sha256OptionMustBe64HexDigits()
    {
        var e = Assert.Throws<ArgumentException>(() => ResumableDownloader.ParseSha256("abc", "--sha256"));
        Assert.Contains("--sha256", e.Message);
        Assert.Contains("64 hex digits", e.Message);
    }
}
