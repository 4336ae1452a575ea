using System.Text.Json;
using KvAdaQuant.Cli.Serve;
using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// llama-server's <c>POST /slots/{id}?action=save|restore|erase</c> on <c>kvaq serve --slot-save-path</c>: a slot's quantized
/// KV cache and tokens go to a state file and back, into any slot, and a later prompt that starts with them takes them from
/// the cache and answers as it would alone; bad ids, actions, file names and files are refused naming them.
/// </summary>
public class ServeSlotActionsTests
{
    private const string Prompt = "Once upon a time";

    [Fact]
    public void A_saved_slot_restores_into_another_slot_and_a_longer_prompt_takes_it_from_the_cache()
    {
        using var dir = new TempDir();
        string folder = Path.Combine(dir.Path, "slots", "new"); // created by the server
        using var reference = new ServeReference("stories3M-q80", "k4v2", 128);
        var first = reference.Generate(Prompt, 24);
        string longer = Prompt + first.Text + " Then";
        var expected = reference.Generate(longer, 16);

        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--parallel", "2", "--slot-save-path", folder);
        Assert.True(Directory.Exists(folder));
        var (status, body) = server.Post("/v1/completions", $$"""{"prompt": "{{Prompt}}", "max_tokens": 24, "temperature": 0}""");
        Assert.Equal(200, status);
        Assert.Equal(first.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());

        // The slot that ran it holds the prompt and the tokens fed back (all but the last one sampled).
        var slots = server.Get("/slots").Body.EnumerateArray().ToArray();
        int held = first.PromptTokens.Count + first.Tokens.Count - 1;
        int s = Array.FindIndex(slots, x => x.GetProperty("cache_tokens").GetInt32() == held);
        Assert.True(s >= 0, $"no slot holds {held} tokens: {server.Get("/slots").Body}");
        int t = 1 - s;
        long kvBytes = slots[s].GetProperty("kv_bytes").GetInt64();

        var (saveStatus, save) = server.Post($"/slots/{s}?action=save", """{"filename": "story.bin"}""");
        Assert.Equal(200, saveStatus);
        Assert.Equal(s, save.GetProperty("id_slot").GetInt32());
        Assert.Equal("story.bin", save.GetProperty("filename").GetString());
        Assert.Equal(held, save.GetProperty("n_saved").GetInt32());
        string file = Path.Combine(folder, "story.bin");
        Assert.Equal(new FileInfo(file).Length, save.GetProperty("n_written").GetInt64());
        Assert.True(save.GetProperty("timings").GetProperty("save_ms").GetDouble() >= 0);
        Assert.Equal(Directory.GetFiles(folder).Select(Path.GetFileName), ["story.bin"]); // no temporary file left

        // The file is a kvaq state file of those tokens: it loads into the library's own session of the same plan.
        var state = SessionStateFile.LoadFile(file, reference.Session);
        Assert.Equal([.. first.PromptTokens, .. first.Tokens.Take(first.Tokens.Count - 1)], state.Tokens);
        Assert.Equal("k4v2", state.KvDescription);

        var (eraseStatus, erase) = server.Post($"/slots/{s}?action=erase", "{}");
        Assert.Equal(200, eraseStatus);
        Assert.Equal(held, erase.GetProperty("n_erased").GetInt32());
        Assert.False(erase.TryGetProperty("filename", out _));
        Assert.Equal(0, server.Get("/slots").Body[s].GetProperty("cache_tokens").GetInt32());

        var (restoreStatus, restore) = server.Post($"/slots/{t}?action=restore", """{"filename": "story.bin"}""");
        Assert.Equal(200, restoreStatus);
        Assert.Equal(t, restore.GetProperty("id_slot").GetInt32());
        Assert.Equal(held, restore.GetProperty("n_restored").GetInt32());
        Assert.Equal(new FileInfo(file).Length, restore.GetProperty("n_read").GetInt64());
        Assert.True(restore.GetProperty("timings").GetProperty("restore_ms").GetDouble() >= 0);
        var after = server.Get("/slots").Body;
        Assert.Equal(held, after[t].GetProperty("cache_tokens").GetInt32());
        Assert.Equal(kvBytes, after[t].GetProperty("kv_bytes").GetInt64());

        // A prompt that extends the restored tokens runs only its rest, and answers as it does alone.
        var (longStatus, answer) = server.Post("/v1/completions", $$"""{"prompt": {{JsonSerializer.Serialize(longer)}}, "max_tokens": 16, "temperature": 0}""");
        Assert.Equal(200, longStatus);
        Assert.Equal(expected.Text, answer.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(held, answer.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
        Assert.Contains($"slot {s}: {held} tokens saved to story.bin", server.StderrOnce($"slot {s}: {held} tokens saved to story.bin"), StringComparison.Ordinal);
        Assert.Contains($"slot {t}: {held} tokens restored from story.bin", server.StderrOnce($"slot {t}: {held} tokens restored from story.bin"), StringComparison.Ordinal);
    }

    [Fact]
    public void Slot_actions_racing_with_requests_never_change_an_answer()
    {
        // Two slots; one thread sends completions (some extending others, so caches are reused, cut back or restored
        // under them), another saves, erases and restores slots meanwhile. Every answer is the request's alone; an
        // action on a slot a request holds is a 503, never a broken cache.
        string[] prompts = ["Once upon a time", "Once upon a time, there was", "The little dog", "The little dog ran to the", "One day"];
        using var dir = new TempDir();
        using var reference = new ServeReference("stories3M-q80", "k4v2", 128);
        var expected = prompts.Select(p => reference.Generate(p, 10).Text).ToArray();
        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--parallel", "2", "--slot-save-path", dir.Path);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var actions = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        using var done = new CancellationTokenSource();
        var requester = new Thread(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                int k = (i * 3) % prompts.Length;
                var (status, body) = server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = prompts[k], max_tokens = 10, temperature = 0 }));
                string? text = status == 200 ? body.GetProperty("choices")[0].GetProperty("text").GetString() : null;
                if (status != 200 || text != expected[k])
                {
                    failures.Enqueue($"request {i} ({prompts[k]}): {status} {text ?? body.ToString()}");
                }
            }

            done.Cancel();
        });
        var actor = new Thread(() =>
        {
            for (int i = 0; !done.IsCancellationRequested; i++)
            {
                string action = (i % 3) switch { 0 => "save", 1 => "erase", _ => "restore" };
                var (status, body) = server.Post($"/slots/{i % 2}?action={action}", action == "erase" ? "{}" : """{"filename": "race.bin"}""");
                actions.AddOrUpdate($"{action} {status}", 1, (_, n) => n + 1);
                if (status is not (200 or 503) && !(status == 404 && action == "restore"))
                {
                    failures.Enqueue($"{action} on slot {i % 2}: {status} {body}");
                }
            }
        });
        requester.Start();
        actor.Start();
        requester.Join();
        actor.Join();
        Assert.True(failures.IsEmpty, string.Join("\n", failures));
        Assert.True(actions.Keys.Any(k => k.EndsWith(" 200", StringComparison.Ordinal)), string.Join(", ", actions));
        Assert.DoesNotContain("unexpected", server.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void An_action_on_the_slot_a_streaming_request_holds_is_a_503_and_the_reply_goes_on()
    {
        // One slot, one thread: a long streamed reply holds it for a few hundred milliseconds. An erase sent once its
        // first piece has arrived finds the slot busy (tried up to three times, in case a loaded machine let the reply
        // end first), and the reply is the request's alone.
        using var reference = new ServeReference("stories3M-q80", "k4v2", 512);
        var expected = reference.Generate(Prompt, 400);
        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "512", "--threads", "1");
        var statuses = new List<int>();
        for (int attempt = 0; attempt < 3 && !statuses.Contains(503); attempt++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/completion")
            {
                Content = new StringContent(JsonSerializer.Serialize(new { prompt = Prompt, n_predict = 400, temperature = 0, stream = true, cache_prompt = false }), System.Text.Encoding.UTF8, "application/json"),
            };
            using var response = server.Client.Send(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(response.Content.ReadAsStream());
            var text = new System.Text.StringBuilder();
            string? line = reader.ReadLine(); // the first piece
            var (status, body) = server.Post("/slots/0?action=erase", "{}");
            statuses.Add(status);
            if (status == 503)
            {
                Assert.Equal("slot 0 is busy: a request is using it; try again when it ends", body.GetProperty("error").GetProperty("message").GetString());
            }

            for (; line is not null; line = reader.ReadLine())
            {
                if (line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    using var e = JsonDocument.Parse(line["data: ".Length..]);
                    if (!e.RootElement.GetProperty("stop").GetBoolean())
                    {
                        text.Append(e.RootElement.GetProperty("content").GetString());
                    }
                }
            }

            Assert.Equal(expected.Text, text.ToString());
        }

        Assert.Contains(503, statuses);
        Assert.Equal(200, server.Post("/slots/0?action=erase", "{}").Status); // free again
    }

    [Fact]
    public void A_prompt_cache_file_of_generate_restores_into_a_slot()
    {
        // kvaq generate --prompt-cache writes the same state files: the server takes one as a slot file.
        using var dir = new TempDir();
        var (rc, _, stderr) = KvaqProcess.Run("generate", "--model", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "-p", Prompt, "-n", "4", "--prompt-cache", dir.File("prompt.bin"));
        Assert.True(rc == 0, stderr);
        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "1", "--slot-save-path", dir.Path);
        var (status, restore) = server.Post("/slots/0?action=restore", """{"filename": "prompt.bin"}""");
        Assert.Equal(200, status);
        int n = restore.GetProperty("n_restored").GetInt32();
        Assert.True(n >= 2, restore.ToString());
        var (_, answer) = server.Post("/v1/completions", $$"""{"prompt": "{{Prompt}} there", "max_tokens": 4, "temperature": 0}""");
        Assert.Equal(n, answer.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
    }

    [Fact]
    public void Bad_slot_actions_are_refused_naming_what_was_wrong()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("notes.txt"), "hello, world");
        using (var reference = new ServeReference("stories3M-q80", "fp16", 128))
        {
            var r = reference.Generate(Prompt, 2);
            SessionStateFile.SaveFile(dir.File("fp16.bin"), reference.Session, [.. r.PromptTokens, .. r.Tokens.Take(reference.Session.Position - r.PromptTokens.Count)]);
        }

        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "1", "--slot-save-path", dir.Path);
        int warm = server.Get("/slots").Body[0].GetProperty("cache_tokens").GetInt32(); // the warm-up's BOS
        (string Path, string Body, int Status, string Param, string Message)[] cases =
        [
            ("/slots/1?action=save", """{"filename": "a.bin"}""", 400, "id_slot", "invalid slot id '1': this server has slot 0 (kvaq serve --parallel)"),
            ("/slots/x?action=save", """{"filename": "a.bin"}""", 400, "id_slot", "invalid slot id 'x'"),
            ("/slots/-1?action=erase", "{}", 400, "id_slot", "invalid slot id '-1'"),
            ("/slots/0", "{}", 400, "action", "no action: POST /slots/{id}?action=save, restore or erase"),
            ("/slots/0?action=load", "{}", 400, "action", "invalid action 'load': expected save, restore or erase"),
            ("/slots/0?action=save", "{}", 400, "filename", "filename is required"),
            ("/slots/0?action=save", """{"filename": 3}""", 400, "filename", "filename must be a string, got 3"),
            ("/slots/0?action=save", """{"filename": ""}""", 400, "filename", "invalid filename '': it is empty"),
            ("/slots/0?action=save", """{"filename": "../a.bin"}""", 400, "filename", "it holds a folder separator"),
            ("/slots/0?action=restore", """{"filename": "sub/a.bin"}""", 400, "filename", "it holds a folder separator"),
            ("/slots/0?action=save", """{"filename": ".."}""", 400, "filename", "it is not a file name"),
            ("/slots/0?action=save", """{"filename": "a."}""", 400, "filename", "it ends with a dot"),
            ("/slots/0?action=save", """{"filename": " a.bin"}""", 400, "filename", "it starts or ends with a space"),
            ("/slots/0?action=save", """{"filename": "a:b"}""", 400, "filename", "it holds the character U+003A"),
            ("/slots/0?action=save", """{"filename": "a\u0001b"}""", 400, "filename", "it holds the character U+0001"),
            ("/slots/0?action=restore", """{"filename": "missing.bin"}""", 404, "filename", "no slot file 'missing.bin' in --slot-save-path"),
            ("/slots/0?action=restore", """{"filename": "notes.txt"}""", 400, "filename", "cannot restore 'notes.txt': not a kvaq state file (it starts with \"hello, w\", not \"KVAQSTAT\")"),
            ("/slots/0?action=restore", """{"filename": "fp16.bin"}""", 400, "filename", "cannot restore 'fp16.bin': "),
        ];
        foreach (var (path, json, status, param, message) in cases)
        {
            var (got, body) = server.Post(path, json);
            var error = body.GetProperty("error");
            Assert.True(got == status, $"{path} {json}: {got} {body}");
            Assert.Equal(param, error.GetProperty("param").GetString());
            Assert.Contains(message, error.GetProperty("message").GetString(), StringComparison.Ordinal);
            Assert.DoesNotContain(dir.Path, error.GetProperty("message").GetString(), StringComparison.Ordinal);
        }

        // Another plan's state names the plan; the slot keeps what it held.
        string fp16 = server.Post("/slots/0?action=restore", """{"filename": "fp16.bin"}""").Body.GetProperty("error").GetProperty("message").GetString()!;
        Assert.Contains("fp16", fp16, StringComparison.Ordinal);
        Assert.Equal(warm, server.Get("/slots").Body[0].GetProperty("cache_tokens").GetInt32());
        Assert.Equal(["fp16.bin", "notes.txt"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Without_a_slot_save_path_save_and_restore_are_not_supported_and_erase_works()
    {
        using var server = new ServeProcess("-m", "stories260K", "--ctx", "64", "--threads", "1");
        var (status, body) = server.Post("/slots/0?action=save", """{"filename": "a.bin"}""");
        Assert.Equal(501, status);
        Assert.Equal("this server does not save slots; start it with --slot-save-path FOLDER", body.GetProperty("error").GetProperty("message").GetString());
        Assert.Equal("not_supported_error", body.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal(501, server.Post("/slots/0?action=restore", """{"filename": "a.bin"}""").Status);

        Assert.Equal(200, server.Post("/v1/completions", """{"prompt": "Once", "max_tokens": 3, "temperature": 0}""").Status);
        int held = server.Get("/slots").Body[0].GetProperty("cache_tokens").GetInt32();
        Assert.True(held > 0);
        var (eraseStatus, erase) = server.Post("/slots/0?action=erase", "{}");
        Assert.Equal(200, eraseStatus);
        Assert.Equal(held, erase.GetProperty("n_erased").GetInt32());
        Assert.Equal(0, server.Get("/slots").Body[0].GetProperty("cache_tokens").GetInt32());
    }

    [Fact]
    public void A_slot_save_path_that_is_a_file_or_with_device_cuda_is_an_error_naming_the_option()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("file"), "x");
        var (rc, stdout, stderr) = ServeCommandTests.Run("-m", "stories260K", "--port", "0", "--slot-save-path", dir.File("file"));
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: --slot-save-path: {dir.File("file")} is a file; give a folder", stderr.Trim());
        Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);

        // Checked before the device opens: the same error with or without a GPU.
        (rc, stdout, stderr) = ServeCommandTests.Run("-m", "stories260K", "--port", "0", "--device", "cuda", "--slot-save-path", dir.Path);
        Assert.Equal(1, rc);
        Assert.Equal("kvaq: error: --slot-save-path: state files hold the CPU engine's KV caches; it cannot be combined with --device cuda", stderr.Trim());
        Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void A_slot_a_request_holds_is_not_handed_to_an_action()
    {
        using var model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 1);
        var sessions = Enumerable.Range(0, 2)
            .Select(_ => (IDecodeSession)new InferenceSession(transformer, KvCacheFactory.Create(KvPlan.Parse("fp32", model.Config.Layers), transformer.CacheLayout(16))))
            .ToList();
        var defaults = new CompletionRequest(null, null, null, 0f, 0, 1f, 0, [], Stream: false);
        using var served = new ServedModel("m", "m", sessions, "fp32", "cpu", model.Tokenizer!, ChatTemplate.None, defaults);

        Assert.True(served.Gate.Wait(0));
        var request = served.Take([1]); // the first free slot: 0
        Assert.Same(sessions[0], request.Session);
        Assert.Null(served.TakeSlot(0));
        Assert.Equal(1, served.Gate.CurrentCount); // the refused action gave its entry back
        var action = served.TakeSlot(1);
        Assert.NotNull(action);
        Assert.Same(sessions[1], action!.Session);
        Assert.Equal(0, served.Gate.CurrentCount);
        Assert.Null(served.TakeSlot(1));
        served.Return(action);
        served.Gate.Release();
        served.Return(request);
        served.Gate.Release();
        Assert.NotNull(served.TakeSlot(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => served.TakeSlot(2));
        foreach (var s in sessions)
        {
            ((InferenceSession)s).Dispose();
        }
    }

    [Theory]
    [InlineData("a.bin", null)]
    [InlineData("slot 0 – story.bin", null)]
    [InlineData("\U0001F600.bin", null)]
    [InlineData("", "is empty")]
    [InlineData(".", "is not a file name")]
    [InlineData("a\\b", "holds a folder separator (give a file name; files live in --slot-save-path)")]
    [InlineData("a?b", "holds the character U+003F, which a slot file name may not")]
    [InlineData("a\u007Fb", "holds the character U+007F, which a slot file name may not")]
    [InlineData("a ", "starts or ends with a space")]
    public void Slot_file_names_are_plain_file_names(string name, string? problem)
    {
        Assert.Equal(problem, ServedModel.SlotFileNameProblem(name));
        Assert.Equal("is longer than 255 bytes", ServedModel.SlotFileNameProblem(new string('é', 128)));
        Assert.Null(ServedModel.SlotFileNameProblem(new string('a', 255)));
        Assert.Equal("holds the character U+D800, which a slot file name may not", ServedModel.SlotFileNameProblem("\uD800x")); // a lone surrogate
    }
}
