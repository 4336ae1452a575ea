using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tests.Serve;

namespace KvAdaQuant.Tests.Cli;

/// <summary>
/// <c>--lookup-ngram</c> and <c>--model-draft</c> on <c>generate</c>, <c>chat</c> and <c>serve</c>: the same tokens as
/// without them, the guesses counted in the summary, <c>--json</c> and llama-server's <c>timings</c>, and misuse named.
/// </summary>
public class SpeculativeCliTests
{
    private const string Prompt = "Lily and Ben went to the park. Lily and Ben played. Then Lily and Ben";

    private static int[] Ints(JsonElement e) => [.. e.EnumerateArray().Select(x => x.GetInt32())];

    [Theory]
    [InlineData("stories3M-q80", "fp32", "--lookup-ngram", "3", "--draft-fixed", "")]
    [InlineData("stories3M-q80", "k4v2", "--lookup-ngram", "2", "--draft-max", "3", "--draft-fixed", "", "--temperature", "0.8", "--seed", "4")]
    [InlineData("stories260K", "fp16", "--model-draft", "stories260K", "--kv-draft", "k4v2", "--draft-p-min", "0.5", "--draft-fixed", "")]
    public void Generate_gives_the_same_tokens_and_counts_the_guesses(string model, string kv, params string[] options)
    {
        options = [.. options.Where(o => o.Length > 0)]; // "" pairs a flag in the name-value list
        string[] common = ["generate", "-m", model, "-p", Prompt, "-n", "48", "--kv", kv, "--threads", "1", "--json"];
        // The same run without the speculative options (options come in name-value pairs).
        string[] sampling = [.. options.Where((o, i) => o is "--temperature" or "--seed" || (i > 0 && options[i - 1] is "--temperature" or "--seed"))];
        var (rc, stdout, stderr) = KvaqProcess.Run([.. common, .. sampling]);
        Assert.True(rc == 0, stderr);
        var plain = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(JsonValueKind.Null, plain.GetProperty("speculative").ValueKind);
        (rc, stdout, stderr) = KvaqProcess.Run([.. common, .. options]);
        Assert.True(rc == 0, stderr);
        var spec = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(Ints(plain.GetProperty("tokens")), Ints(spec.GetProperty("tokens")));
        Assert.Equal(plain.GetProperty("text").GetString(), spec.GetProperty("text").GetString());
        var s = spec.GetProperty("speculative");
        int drafted = s.GetProperty("drafted").GetInt32(), accepted = s.GetProperty("accepted").GetInt32();
        Assert.True(drafted > 0, stdout);
        Assert.InRange(accepted, 0, drafted);
        Assert.Equal((double)accepted / drafted, s.GetProperty("acceptance_rate").GetDouble(), 12);
        Assert.Contains(options[0] == "--lookup-ngram" ? "prompt lookup" : "draft model", s.GetProperty("source").GetString(), StringComparison.Ordinal);

        // The summary line says it too.
        (rc, _, stderr) = KvaqProcess.Run([.. common[..^1], .. options]);
        Assert.True(rc == 0, stderr);
        Assert.Matches($@"speculative: {accepted} of {drafted} guessed tokens kept \([0-9.]+ %\) in [0-9]+ batches\]", stderr);
    }

    [Fact]
    public void Chat_replies_are_the_same_with_prompt_lookup()
    {
        string input = "Tom had a red ball. Tom\n The dog ran to Tom and\n";
        string[] common = ["chat", "-m", "stories3M-q80", "-n", "30", "--chat-template", "none", "--kv", "k4v2", "--threads", "1", "--json", "--temperature", "0.6"];
        var (rc, plain, stderr) = KvaqProcess.RunWithInput(input, common);
        Assert.True(rc == 0, stderr);
        (rc, var spec, stderr) = KvaqProcess.RunWithInput(input, [.. common, "--lookup-ngram", "3"]);
        Assert.True(rc == 0, stderr);
        var a = plain.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        var b = spec.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(2, a.Length);
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++)
        {
            Assert.Equal(a[i].GetProperty("reply").GetString(), b[i].GetProperty("reply").GetString());
            Assert.Equal(a[i].GetProperty("position").GetInt32(), b[i].GetProperty("position").GetInt32());
            Assert.True(b[i].GetProperty("speculative").GetProperty("drafted").GetInt32() >= 0);
        }
    }

    [Fact]
    public void A_gguf_requantized_copy_drafts_for_its_llama2c_original()
    {
        // llama2.c's tokenizer prints <unk>, <s> and </s> as text; the same vocabulary in GGUF marks them special and
        // prints nothing. The draft check compares the tokens both print, so a re-quantized copy is a valid draft.
        using var dir = new TempDir();
        string draft = dir.File("stories3M-q4_0.gguf");
        var (rc, _, stderr) = KvaqProcess.Run("convert", "-m", "stories3M-q80", "--out", draft, "--type", "q4_0", "--threads", "1", "--json");
        Assert.True(rc == 0, stderr);
        string[] common = ["generate", "-m", "stories3M-q80", "-p", Prompt, "-n", "40", "--threads", "1", "--json"];
        (rc, var stdout, stderr) = KvaqProcess.Run(common);
        Assert.True(rc == 0, stderr);
        var plain = JsonDocument.Parse(stdout).RootElement;
        (rc, stdout, stderr) = KvaqProcess.Run([.. common, "--model-draft", draft, "--draft-p-min", "0", "--draft-fixed", "--draft-max", "3"]);
        Assert.True(rc == 0, stderr);
        var spec = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(Ints(plain.GetProperty("tokens")), Ints(spec.GetProperty("tokens")));
        var s = spec.GetProperty("speculative");

        // The 4-bit copy agrees with the 8-bit original on most greedy tokens.
        Assert.True(s.GetProperty("accepted").GetInt32() * 2 > s.GetProperty("drafted").GetInt32(), s.ToString());
    }

    [Theory]
    [InlineData("kvaq: error: --draft-max sets speculative decoding; it needs --lookup-ngram or --model-draft", "--draft-max", "4")]
    [InlineData("kvaq: error: --lookup-ngram and --model-draft: choose one way to guess tokens", "--lookup-ngram", "2", "--model-draft", "stories260K")]
    [InlineData("kvaq: error: --draft-p-min sets the draft model; --lookup-ngram has none", "--lookup-ngram", "2", "--draft-p-min", "0.5")]
    [InlineData("kvaq: error: --lookup-ngram must be in 1..64, got 0", "--lookup-ngram", "0")]
    [InlineData("kvaq: error: --draft-max must be in 1..64, got 100", "--lookup-ngram", "2", "--draft-max", "100")]
    [InlineData("kvaq: error: --draft-min must be in 0..4 (--draft-max), got 5", "--lookup-ngram", "2", "--draft-max", "4", "--draft-min", "5")]
    [InlineData("kvaq: error: --draft-p-min must be in [0, 1], got 2", "--model-draft", "stories3M-q80", "--draft-p-min", "2")]
    [InlineData("kvaq: error: --model-draft stories260K: the draft model's vocabulary has 512 tokens and the target's 4096: a draft model must share the target's tokenizer", "--model-draft", "stories260K")]
    [InlineData("kvaq: error: --lookup-ngram / --model-draft need a KV cache whose results do not depend on the batch (fp32, fp16, or per-token groups without a residual window); --kv k4v2:r16 is not", "--lookup-ngram", "2", "--kv", "k4v2:r16")]
    [InlineData("kvaq: error: --kv-draft: the draft model's KV cache k2v2:kpc cannot be cut back exactly", "--model-draft", "stories3M-q80", "--kv-draft", "k2v2:kpc")]
    [InlineData("kvaq: error: --lookup-ngram: speculative decoding runs on the CPU engine; it cannot be combined with --device cuda", "--lookup-ngram", "2", "--device", "cuda")]
    public void Misuse_is_one_line_naming_the_option(string message, params string[] options)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run(["generate", "-m", "stories3M-q80", "-p", "x", "-n", "4", .. options]);
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith(message, stderr.Trim(), StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void Serve_gives_the_same_completion_and_reports_draft_n()
    {
        using var server = new ServeProcess("-m", "stories3M-q80", "--ctx", "256", "--threads", "1", "--lookup-ngram", "3", "--draft-fixed");
        var (status, body) = server.Post("/completion", $$"""{"prompt": "{{Prompt}}", "n_predict": 40, "temperature": 0}""");
        Assert.Equal(200, status);
        var timings = body.GetProperty("timings");
        int draftN = timings.GetProperty("draft_n").GetInt32();
        Assert.True(draftN > 0);
        Assert.InRange(timings.GetProperty("draft_n_accepted").GetInt32(), 0, draftN);

        // What the library's Generator gives one token at a time.
        using var m = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(m, 1);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(256)));
        var expected = new Generator(session, m.Tokenizer!).Generate(Prompt, 40, new Sampler());
        Assert.Equal(expected.Text, body.GetProperty("content").GetString());

        // The chat endpoint runs through it too, and a second request reuses the cache as usual.
        var (chatStatus, chat) = server.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Tom and Sue and Tom and"}], "max_tokens": 20, "temperature": 0}""");
        Assert.Equal(200, chatStatus);
        Assert.False(string.IsNullOrEmpty(chat.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()));
        var (again, body2) = server.Post("/completion", $$"""{"prompt": "{{Prompt}}", "n_predict": 40, "temperature": 0}""");
        Assert.Equal(200, again);
        Assert.Equal(expected.Text, body2.GetProperty("content").GetString());
    }

    [Fact]
    public void Serve_refuses_speculation_with_parallel_slots()
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("serve", "-m", "stories260K", "--port", "0", "--parallel", "2", "--lookup-ngram", "2");
        Assert.Equal(1, rc);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal("kvaq: error: --lookup-ngram: speculative decoding serves one request at a time on the CPU engine; it cannot be combined with --parallel", stderr.Trim());
    }
}
