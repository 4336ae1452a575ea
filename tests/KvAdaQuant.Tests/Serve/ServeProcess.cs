using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve</c> as a real process on a free port (<c>--port 0</c>): started with the given options, its URL read from
/// the line it prints, its stderr (the request log) collected; stopped with SIGTERM on dispose.
/// </summary>
public sealed class ServeProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly Task _stdoutDrain;

    public ServeProcess(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kvaq.dll"));
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add("--port");
        psi.ArgumentList.Add("0");
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        _process = Process.Start(psi)!;
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(e.Data);
                }
            }
        };
        _process.BeginErrorReadLine();
        var line = _process.StandardOutput.ReadLineAsync();
        if (!line.Wait(TimeSpan.FromSeconds(60)) || line.Result is not { } first || !first.StartsWith("kvaq: listening on http://", StringComparison.Ordinal))
        {
            _process.Kill();
            _process.WaitForExit();
            throw new InvalidOperationException($"kvaq serve did not start (exit {(_process.HasExited ? _process.ExitCode : -1)}): {Stderr}");
        }

        Url = first["kvaq: listening on ".Length..];
        _stdoutDrain = _process.StandardOutput.ReadToEndAsync();
        Client = new HttpClient { BaseAddress = new Uri(Url), Timeout = TimeSpan.FromSeconds(60) };
    }

    /// <summary>The URL the server printed.</summary>
    public string Url { get; }

    public HttpClient Client { get; }

    public Process Process => _process;

    /// <summary>What the server wrote to stderr so far.</summary>
    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>
    /// What the server wrote to stderr once it holds <paramref name="text"/>, or after <paramref name="seconds"/>: a request's
    /// log line comes after its response (the server logs when the handler returns) and reaches the test asynchronously.
    /// </summary>
    public string StderrOnce(string text, double seconds = 15)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        string now;
        while (!(now = Stderr).Contains(text, StringComparison.Ordinal) && watch.Elapsed.TotalSeconds < seconds)
        {
            Thread.Sleep(20);
        }

        return now;
    }

    /// <summary>GETs <paramref name="path"/> and returns the status and the JSON body.</summary>
    public (int Status, JsonElement Body) Get(string path)
    {
        using var response = Client.Send(new HttpRequestMessage(HttpMethod.Get, path));
        return ((int)response.StatusCode, JsonDocument.Parse(Read(response)).RootElement.Clone());
    }

    /// <summary>POSTs <paramref name="json"/> to <paramref name="path"/>, with <paramref name="apiKey"/> as a bearer token when given.</summary>
    public (int Status, JsonElement Body) Post(string path, string json, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }

        using var response = Client.Send(request);
        return ((int)response.StatusCode, JsonDocument.Parse(Read(response)).RootElement.Clone());
    }

    /// <summary>POSTs a streaming request and returns the <c>data:</c> payloads of its events, in order (the last is <c>[DONE]</c>).</summary>
    public (int Status, List<string> Events) PostStream(string path, string json, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }

        using var response = Client.Send(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        string body = Read(response);
        var events = new List<string>();
        foreach (var block in body.Split("\n\n"))
        {
            if (block.Length == 0)
            {
                continue;
            }

            Assert.StartsWith("data: ", block, StringComparison.Ordinal);
            events.Add(block["data: ".Length..]);
        }

        Assert.EndsWith("data: [DONE]\n\n", body, StringComparison.Ordinal);
        return ((int)response.StatusCode, events);
    }

    private static string Read(HttpResponseMessage response)
    {
        using var reader = new StreamReader(response.Content.ReadAsStream(), Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>Sends <paramref name="signal"/> (15 = SIGTERM, 2 = SIGINT) and waits for the exit; returns the exit code.</summary>
    public int Signal(int signal)
    {
        Assert.Equal(0, Kill(_process.Id, signal));
        Assert.True(_process.WaitForExit(TimeSpan.FromSeconds(30)), "kvaq serve did not stop");
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public void Dispose()
    {
        Client.Dispose();
        if (!_process.HasExited)
        {
            _ = Kill(_process.Id, 15);
            if (!_process.WaitForExit(TimeSpan.FromSeconds(15)))
            {
                _process.Kill();
                _process.WaitForExit();
            }
        }

        _ = _stdoutDrain.Wait(TimeSpan.FromSeconds(5));
        _process.Dispose();
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}
