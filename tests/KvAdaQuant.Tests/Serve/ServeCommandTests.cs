using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Serve;

/// <summary><c>kvaq serve</c> as a command: bad options and a taken port are errors naming them; SIGTERM and SIGINT stop it cleanly.</summary>
public class ServeCommandTests
{
    [Theory]
    [InlineData("--port", "70000", "--port must be in 0..65535 (0 = a free port), got 70000")]
    [InlineData("--host", "nowhere.example", "--host: expected an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost, got 'nowhere.example'")]
    [InlineData("--chat-template", "chatml", "--chat-template: chat template chatml: the tokenizer has no control token <|im_start|>")]
    [InlineData("--api-key", "", "--api-key: the key is empty")]
    [InlineData("--max-tokens", "-1", "--max-tokens must be >= 0 (0 = until EOS or the context is full), got -1")]
    [InlineData("--alias", " ", "--alias: the name is empty")]
    [InlineData("--tool-format", "mistral", "--tool-format: unknown tool format 'mistral'; expected one of generic, llama3, hermes or auto")]
    public void Bad_options_are_errors_naming_them(string option, string value, string message)
    {
        var (rc, stdout, stderr) = option == "--port" ? Run("-m", "stories260K", option, value) : Run("-m", "stories260K", "--port", "0", option, value);
        Assert.Equal(1, rc);
        Assert.Contains("kvaq: error: ", stderr, StringComparison.Ordinal);
        Assert.Contains(message, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--attn-int8")]
    [InlineData("--attn-int8-values")]
    public void A_cpu_attention_kernel_with_device_cuda_is_an_error_naming_the_option(string option)
    {
        // Checked before the device opens: the same error with or without a GPU, and generate's.
        var (rc, stdout, stderr) = Run("-m", "stories260K", "--port", "0", "--device", "cuda", option);
        var (_, _, generate) = KvaqProcess.Run("generate", "--model", "stories260K", "--device", "cuda", option, "-n", "4");
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: {option} selects a CPU attention kernel; it cannot be combined with --device cuda", stderr.Trim());
        Assert.Equal(generate, stderr);
        Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Device_cuda_without_a_driver_is_the_same_one_line_error_as_generate()
    {
        Skip.If(KvAdaQuant.Gpu.Cuda.CudaContext.TryOpen(out var context, out _), "this machine has a CUDA device");
        context?.Dispose();
        var (rc, stdout, stderr) = Run("-m", "stories260K", "--port", "0", "--device", "cuda");
        var (_, _, generate) = KvaqProcess.Run("generate", "--model", "stories260K", "--device", "cuda", "-n", "4");
        Assert.Equal(1, rc);
        Assert.StartsWith("kvaq: error: --device cuda:", stderr, StringComparison.Ordinal);
        Assert.Contains("driver", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(generate, stderr);
        Assert.Equal(string.Empty, stdout);
    }

    [Fact]
    public void A_port_in_use_is_an_error_naming_the_address()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var (rc, _, stderr) = Run("-m", "stories260K", "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(1, rc);
        Assert.Contains($"kvaq: error: Failed to bind to address http://127.0.0.1:{port}", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    [SkippableTheory]
    [InlineData(15)]
    [InlineData(2)]
    public void A_signal_stops_the_server_cleanly(int signal)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "sends the signal with kill(2)");
        Skip.If(signal == 2 && KvaqProcess.SigintIgnored(), "SIGINT is ignored in this process tree (started in the background without job control); SIGTERM covers the shutdown");
        using var server = new ServeProcess("-m", "stories260K", "--threads", "1", "--host", "localhost");
        Assert.StartsWith("http://127.0.0.1:", server.Url, StringComparison.Ordinal);
        Assert.Equal(200, server.Post("/v1/completions", """{"prompt": "Once", "max_tokens": 4}""").Status);
        Assert.Equal(0, server.Signal(signal));
        Assert.Contains("[serve: stopped]", server.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("kvaq: error", server.Stderr, StringComparison.Ordinal);
    }

    // kvaq serve with a time limit: a bad option must end it at once, never leave a server running.
    internal static (int Rc, string Stdout, string Stderr) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kvaq.dll"));
        psi.ArgumentList.Add("serve");
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill();
            p.WaitForExit();
            Assert.Fail($"kvaq serve {string.Join(' ', args)} did not exit");
        }

        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
