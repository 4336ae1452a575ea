using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// A minimal HTTP/1.1 file server on 127.0.0.1 (ephemeral port) for download tests: serves byte arrays by path,
/// honours <c>Range: bytes=N-</c> (unless told not to), can cut the first responses short to simulate a dropped
/// connection or to stall (headers and some bytes, then silence), answers chosen paths with a fixed status, and
/// records the Range header of every request.
/// </summary>
public sealed class LocalHttpServer : IDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Dictionary<string, byte[]> _files = new(StringComparer.Ordinal);
    private readonly Task _loop;
    private readonly Dictionary<string, int> _statuses = new(StringComparer.Ordinal);
    private int _dropsLeft;
    private int _stallsLeft;

    public LocalHttpServer()
    {
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        _loop = Task.Run(AcceptLoop);
    }

    public string BaseUrl => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>Range header of each request for a served file ("" when none), in order.</summary>
    public ConcurrentQueue<(string Path, string Range)> Requests { get; } = new();

    /// <summary>Whether Range requests get 206 (otherwise the whole file with 200).</summary>
    public bool SupportsRange { get; set; } = true;

    /// <summary>Bytes of the body sent before a dropped response closes the connection.</summary>
    public int DropAfterBytes { get; set; }

    public void Serve(string path, byte[] content) => _files[path] = content;

    /// <summary>Answers <paramref name="path"/> with <paramref name="status"/> and an empty body.</summary>
    public void Status(string path, int status) => _statuses[path] = status;

    /// <summary>The next <paramref name="count"/> file responses send <see cref="DropAfterBytes"/> bytes, then nothing until the server stops.</summary>
    public void StallNext(int count) => _stallsLeft = count;

    /// <summary>Cuts the next <paramref name="count"/> file responses short after <see cref="DropAfterBytes"/> bytes.</summary>
    public void DropNext(int count) => _dropsLeft = count;

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        try
        {
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
    }

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(() => Handle(client));
        }
    }

    private async Task Handle(TcpClient client)
    {
        using (client)
        {
            try
            {
                var stream = client.GetStream();
                var head = new StringBuilder();
                var one = new byte[1];
                while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
                {
                    if (await stream.ReadAsync(one) == 0)
                    {
                        return;
                    }

                    head.Append((char)one[0]);
                }

                var lines = head.ToString().Split("\r\n");
                var path = lines[0].Split(' ')[1];
                var range = lines.FirstOrDefault(l => l.StartsWith("Range:", StringComparison.OrdinalIgnoreCase))?[6..].Trim() ?? string.Empty;
                if (_statuses.TryGetValue(path, out int status))
                {
                    await Write(stream, $"HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    return;
                }

                if (!_files.TryGetValue(path, out var content))
                {
                    await Write(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    return;
                }

                Requests.Enqueue((path, range));
                long from = 0;
                if (SupportsRange && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
                {
                    from = long.Parse(range[6..^1], System.Globalization.CultureInfo.InvariantCulture);
                    if (from >= content.Length)
                    {
                        await Write(stream, $"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{content.Length}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }

                    await Write(stream, $"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{content.Length - 1}/{content.Length}\r\nContent-Length: {content.Length - from}\r\nConnection: close\r\n\r\n");
                }
                else
                {
                    await Write(stream, $"HTTP/1.1 200 OK\r\nContent-Length: {content.Length}\r\nAccept-Ranges: {(SupportsRange ? "bytes" : "none")}\r\nConnection: close\r\n\r\n");
                }

                long to = content.Length;
                bool file = !path.Contains(".sha256", StringComparison.Ordinal);
                bool stall = file && Interlocked.Decrement(ref _stallsLeft) >= 0;
                if (stall || (file && Interlocked.Decrement(ref _dropsLeft) >= 0))
                {
                    to = Math.Min(to, from + DropAfterBytes);
                }

                await stream.WriteAsync(content.AsMemory((int)from, (int)(to - from)));
                await stream.FlushAsync();
                if (stall)
                {
                    try
                    {
                        await Task.Delay(Timeout.Infinite, _stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                    }

                    return;
                }

                if (to < content.Length)
                {
                    client.Client.LingerState = new LingerOption(true, 0); // reset: the client sees the transfer break off
                }
            }
            catch (IOException)
            {
            }
        }
    }

    private static Task Write(NetworkStream s, string text) => s.WriteAsync(Encoding.ASCII.GetBytes(text)).AsTask();
}
