using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Cli;

/// <summary><c>kvaq chat</c> end to end on standard input: replies, /reset, refused turns, bad options.</summary>
public class ChatCommandTests
{
    private static JsonElement[] Lines(string stdout) =>
        stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToArray();

    private static int[] Ids(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();

    [Fact]
    public void Chat_replies_equal_generate_and_reset_starts_over()
    {
        var (rc, stdout, stderr) = KvaqProcess.RunWithInput(
            "Once upon a time\nThe dog\\\nran\n/reset\nOnce upon a time\n/exit\nnever read\n",
            "chat", "-m", "stories260K", "-n", "24", "--json");
        Assert.True(rc == 0, stderr);
        var turns = Lines(stdout);
        Assert.Equal(3, turns.Length);
        Assert.Equal("The dog\nran", turns[1].GetProperty("user").GetString());
        Assert.Contains("[conversation reset]", stderr);

        var (grc, gout, gerr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "24", "--json");
        Assert.True(grc == 0, gerr);
        var generated = JsonDocument.Parse(gout).RootElement;
        foreach (var t in new[] { turns[0], turns[2] })
        {
            Assert.Equal(Ids(generated.GetProperty("tokens")), Ids(t.GetProperty("tokens")));
            Assert.Equal(generated.GetProperty("text").GetString(), t.GetProperty("reply").GetString());
            Assert.Equal(5 + 24, t.GetProperty("position").GetInt32());
            Assert.Equal("none", t.GetProperty("template").GetString());
        }

        // The second turn continued the first: its position counts both.
        Assert.Equal(29 + turns[1].GetProperty("prompt_tokens").GetInt32() + 24, turns[1].GetProperty("position").GetInt32());
    }

    [Fact]
    public void Logprobs_come_with_each_reply_and_equal_the_chat_sessions()
    {
        var (rc, stdout, stderr) = KvaqProcess.RunWithInput("Once upon a time\nThe dog\n", "chat", "-m", "stories260K", "-n", "6", "--json", "--logprobs", "2", "--threads", "1");
        Assert.True(rc == 0, stderr);
        var replies = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(2, replies.Length);

        using var m = ModelLoader.Load("stories260K");
        using var t = new Transformer(m, 1);
        using var session = new InferenceSession(t, KvCacheFactory.Create("fp32", t.CacheLayout(512)));
        var chat = new ChatSession(session, m.Tokenizer!, ChatTemplate.None);
        foreach (var (reply, message) in replies.Zip(new[] { "Once upon a time", "The dog" }))
        {
            var expected = chat.Reply(message, 6, new Sampler(), logprobs: new LogprobOptions(2)).Logprobs!;
            var entries = reply.GetProperty("logprobs").EnumerateArray().ToArray();
            Assert.Equal(reply.GetProperty("tokens").GetArrayLength(), entries.Length);
            Assert.Equal(expected.Select(e => e.Token), entries.Select(e => e.GetProperty("token").GetInt32()));
            Assert.Equal(expected.Select(e => e.Logprob), entries.Select(e => e.GetProperty("logprob").GetSingle()));
            Assert.All(entries, e => Assert.Equal(2, e.GetProperty("top_logprobs").GetArrayLength()));
        }

        (rc, _, stderr) = KvaqProcess.RunWithInput("Hi\n", "chat", "-m", "stories260K", "--logprobs", "30");
        Assert.Equal(1, rc);
        Assert.Contains("--logprobs must be in 0..20", stderr);
    }

    [Fact]
    public void Ubatch_splits_each_turns_prefill_without_changing_a_reply()
    {
        // As generate's: prefill tokens per forward pass on the CPU (with --device cuda, positions per GPU prefill pass);
        // with k4v2 per-token groups the replies and their log-probabilities are the same bits for any split.
        string? first = null;
        foreach (var ub in new[] { null, "1", "7" })
        {
            string[] args = ["chat", "-m", "stories3M-q80", "-n", "8", "--kv", "k4v2", "--json", "--logprobs", "2", "--threads", "1"];
            var (rc, stdout, stderr) = KvaqProcess.RunWithInput("Once upon a time\nThe dog ran\n", ub is null ? args : [.. args, "--ubatch", ub]);
            Assert.True(rc == 0, stderr);
            var replies = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
            Assert.Equal(2, replies.Length);
            string seen = string.Join('|', replies.Select(r => r.GetProperty("reply").GetString() + r.GetProperty("tokens").ToString() + r.GetProperty("logprobs").ToString()));
            first ??= seen;
            Assert.Equal(first, seen);
        }

        var (code, _, err) = KvaqProcess.RunWithInput("Hi\n", "chat", "-m", "stories260K", "--ubatch", "0");
        Assert.Equal(1, code);
        Assert.Equal("kvaq: error: --ubatch must be at least 1, got 0", err.Trim());
        if (!KvAdaQuant.Gpu.Cuda.CudaContext.TryOpen(out var context, out _))
        {
            var (_, _, plain) = KvaqProcess.RunWithInput("Hi\n", "chat", "-m", "stories260K", "--device", "cuda");
            (code, _, err) = KvaqProcess.RunWithInput("Hi\n", "chat", "-m", "stories260K", "--device", "cuda", "--ubatch", "8");
            Assert.Equal(1, code);
            Assert.StartsWith("kvaq: error: --device cuda:", err, StringComparison.Ordinal);
            Assert.Equal(plain, err);
        }

        context?.Dispose();
    }

    [Fact]
    public void Auto_detects_the_template_of_a_gguf_and_info_names_it()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "s260k-chat.gguf");
        using (var bin = KvAdaQuant.Formats.ModelLoader.Load("stories260K"))
        {
            var meta = KvAdaQuant.Formats.ConvertedTokenizer.ToGguf(bin, null).Set("tokenizer.chat_template", "{{ bos_token }}[INST] {{ messages[0]['content'] }} [/INST]");
            KvAdaQuant.Formats.Gguf.GgufModelExporter.FromModel(bin, meta, KvAdaQuant.Numerics.GgmlType.F32, "stories260K chat").Write(path);
        }

        var (rc, stdout, stderr) = KvaqProcess.RunWithInput("Once upon a time\n", "chat", "-m", path, "-n", "8", "--json");
        Assert.True(rc == 0, stderr);
        var turn = Assert.Single(Lines(stdout));
        Assert.Equal("llama2", turn.GetProperty("template").GetString());
        Assert.Contains("template llama2", stderr);

        var (irc, info, ierr) = KvaqProcess.Run("info", "-m", path, "--json");
        Assert.True(irc == 0, ierr);
        Assert.Equal("llama2", JsonDocument.Parse(info).RootElement.GetProperty("chat_template").GetString());
        (irc, info, ierr) = KvaqProcess.Run("info", "-m", "stories260K", "--json");
        Assert.True(irc == 0, ierr);
        Assert.Equal("none", JsonDocument.Parse(info).RootElement.GetProperty("chat_template").GetString());
    }

    [Fact]
    public void A_turn_that_does_not_fit_is_an_error_naming_the_turn_and_the_chat_goes_on()
    {
        var (rc, stdout, stderr) = KvaqProcess.RunWithInput(
            "Once upon a time there was a big dog and a little cat who played in the park every day\nHi\n",
            "chat", "-m", "stories260K", "-n", "4", "--ctx", "16", "--json");
        Assert.Equal(1, rc);
        Assert.Contains("kvaq: error: turn 1: this turn needs", stderr);
        Assert.Contains("of the context's 16 positions are left", stderr);
        Assert.DoesNotContain("   at ", stderr);
        var turns = Lines(stdout);
        Assert.Equal(2, Assert.Single(turns).GetProperty("turn").GetInt32());
    }

    [Fact]
    public void Context_shift_keeps_a_long_chat_going_where_it_would_be_refused()
    {
        const string Input = "Once upon a time\n The dog ran\n Lily saw a cat\n The sun\n";
        var (rc, stdout, stderr) = KvaqProcess.RunWithInput(Input, "chat", "-m", "stories260K", "-n", "20", "--ctx", "64", "--json");
        Assert.Equal(1, rc);
        Assert.Contains("kvaq: error: turn 4: this turn needs", stderr);

        (rc, stdout, stderr) = KvaqProcess.RunWithInput(Input, "chat", "-m", "stories260K", "-n", "20", "--ctx", "64", "--json", "--context-shift");
        Assert.True(rc == 0, stderr);
        var turns = Lines(stdout);
        Assert.Equal([0, 0, 2, 2], turns.Select(t => t.GetProperty("shifted_messages").GetInt32()));
        Assert.All(turns, t => Assert.Equal("max_tokens", t.GetProperty("stop_reason").GetString()));
        Assert.Contains("kvaq: note: turn 3: the context was full (51 of 64 positions used): dropped the 2 oldest messages and fed the rest of the conversation again (32 tokens)", stderr);
    }

    [Fact]
    public void Reverse_prompts_end_replies_and_prefix_and_suffix_wrap_each_message()
    {
        var (rc, stdout, stderr) = KvaqProcess.RunWithInput(
            "Once upon a time\n", "chat", "-m", "stories260K", "-n", "60", "-r", "park", "-r", "Lily", "--json");
        Assert.True(rc == 0, stderr);
        var turn = Assert.Single(Lines(stdout));
        Assert.Equal("stop_text", turn.GetProperty("stop_reason").GetString());
        Assert.EndsWith("Lily", turn.GetProperty("reply").GetString(), StringComparison.Ordinal);

        // --in-prefix and --in-suffix: the same reply as the whole text typed as the message.
        (rc, stdout, stderr) = KvaqProcess.RunWithInput("upon a time\n", "chat", "-m", "stories260K", "-n", "12", "--in-prefix", "Once ", "--in-suffix", ",", "--json");
        Assert.True(rc == 0, stderr);
        var wrapped = Assert.Single(Lines(stdout));
        (rc, stdout, stderr) = KvaqProcess.RunWithInput("Once upon a time,\n", "chat", "-m", "stories260K", "-n", "12", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Equal(Ids(Assert.Single(Lines(stdout)).GetProperty("tokens")), Ids(wrapped.GetProperty("tokens")));
    }

    [Theory]
    [InlineData("--reverse-prompt", "", "--reverse-prompt: an empty text would end every reply at once")]
    [InlineData("--chat-template", "gemma", "--chat-template: unknown chat template 'gemma'; expected one of none, chatml, llama3, llama2 or auto")]
    [InlineData("--chat-template", "chatml", "--chat-template: chat template chatml: the tokenizer has no control token <|im_start|> (choose another template, or none)")]
    [InlineData("--max-tokens", "0", "--max-tokens must be >= 1, got 0")]
    [InlineData("--top-p", "0", "--top-p must be in (0, 1], got 0")]
    [InlineData("--temperature", "-1", "--temperature must be finite and >= 0, got -1")]
    [InlineData("--ctx", "100000", "--ctx must be in 0..512 (the model's context), got 100000")]
    public void Bad_options_are_errors_naming_them(string option, string value, string message)
    {
        var (rc, _, stderr) = KvaqProcess.RunWithInput("Hi\n", "chat", "-m", "stories260K", option, value);
        Assert.Equal(1, rc);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [SkippableFact]
    public void Ctrl_c_while_a_reply_streams_ends_that_reply_and_the_chat_goes_on()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "sends SIGINT with kill(2)");
        Skip.If(KvaqProcess.SigintIgnored(), "SIGINT is ignored in this process tree (started in the background without job control), so kvaq would inherit that");

        // SIGINT goes out as soon as the reply's first character arrives. A reply can still end first (stories3M-q80 decodes
        // thousands of tokens a second), and SIGINT at the prompt then ends kvaq as it should (exit code 130): only then is
        // it tried again, three times at most. A broken handler fails every attempt (kvaq killed mid-reply, or no cancel).
        var outcomes = new List<string>();
        for (int attempt = 0; attempt < 3; attempt++)
        {
            var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "kvaq.dll"), "chat", "-m", "stories3M-q80", "-n", "400", "--threads", "1", "--kv", "k4v2" })
            {
                psi.ArgumentList.Add(a);
            }

            using var p = System.Diagnostics.Process.Start(psi)!;
            var stderr = p.StandardError.ReadToEndAsync();
            try
            {
                p.StandardInput.WriteLine("Once upon a time");
                p.StandardInput.Flush();
                Assert.NotEqual(-1, p.StandardOutput.Read());
                Assert.Equal(0, Kill(p.Id, 2));
                p.StandardInput.WriteLine("The dog");
                p.StandardInput.Close();
                _ = p.StandardOutput.ReadToEnd();
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "kvaq chat did not end");
                string err = stderr.Result;
                if (p.ExitCode == 130 && err.Contains("(eos)", StringComparison.Ordinal))
                {
                    outcomes.Add("the reply ended before SIGINT");
                    continue;
                }

                Assert.True(p.ExitCode == 0, $"rc {p.ExitCode}: {err}");
                var stats = err.Split('\n').Where(l => l.Contains(" generated (", StringComparison.Ordinal)).ToArray();
                Assert.Equal(2, stats.Length);
                if (!stats[0].Contains("generated (cancelled)", StringComparison.Ordinal))
                {
                    // The signal came between the reply's last token and the end of its turn: nothing left to cancel.
                    outcomes.Add("the reply ended as SIGINT arrived: " + stats[0]);
                    continue;
                }

                Assert.DoesNotContain("(cancelled)", stats[1]);
                return;
            }
            finally
            {
                if (!p.HasExited)
                {
                    p.Kill();
                }
            }
        }

        Assert.Fail(string.Join("; ", outcomes));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}
