using System.Text.Json;

namespace KvAdaQuant.Tests.Cli;

/// <summary><c>kvaq generate --file</c> and <c>--stop</c>: the prompt read from a file gives what the same <c>--prompt</c> gives; stop texts cut the run; misuse is named.</summary>
public class GenerateOptionsTests
{
    [Fact]
    public void A_prompt_file_generates_what_the_same_prompt_option_does()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "prompt.txt");
        File.WriteAllText(path, "Once upon a time, the dog\nsaid");
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-f", path, "-n", "12", "--json");
        Assert.True(rc == 0, stderr);
        var (rc2, stdout2, stderr2) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time, the dog\nsaid", "-n", "12", "--json");
        Assert.True(rc2 == 0, stderr2);
        var a = JsonDocument.Parse(stdout).RootElement;
        var b = JsonDocument.Parse(stdout2).RootElement;
        Assert.Equal(b.GetProperty("prompt_tokens").ToString(), a.GetProperty("prompt_tokens").ToString());
        Assert.Equal(b.GetProperty("tokens").ToString(), a.GetProperty("tokens").ToString());
        Assert.Equal("Once upon a time, the dog\nsaid", a.GetProperty("prompt").GetString());
    }

    [Fact]
    public void Stop_texts_end_the_generation_where_its_text_first_ends_with_one()
    {
        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "60", "--stop", "park", "--stop", "Lily", "--json");
        Assert.True(rc == 0, stderr);
        var stopped = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal("stop_text", stopped.GetProperty("stop_reason").GetString());
        Assert.EndsWith("Lily", stopped.GetProperty("text").GetString(), StringComparison.Ordinal);
        (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "60", "--json");
        Assert.True(rc == 0, stderr);
        var whole = JsonDocument.Parse(stdout).RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var cut = stopped.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.True(cut.Length < whole.Length);
        Assert.Equal(whole[..cut.Length], cut);

        (rc, _, stderr) = KvaqProcess.Run("generate", "-m", "stories260K", "--stop", "");
        Assert.Equal(1, rc);
        Assert.Equal("kvaq: error: --stop: an empty text would end the generation at once", stderr.Trim());
    }

    [Theory]
    [InlineData("--temperature", "0.9", "--top-k", "20", "--min-p", "0.1", "--seed", "7")]
    [InlineData("--repeat-penalty", "1.3", "--repeat-last-n", "16", "--presence-penalty", "0.2", "--frequency-penalty", "0.1")]
    public void Min_p_and_the_penalties_reach_the_sampler(params string[] options)
    {
        // The command's tokens equal the library's Generator with a Sampler set the same way.
        var (rc, stdout, stderr) = KvaqProcess.Run(["generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "40", "--json", .. options]);
        Assert.True(rc == 0, stderr);
        var got = JsonDocument.Parse(stdout).RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToList();

        string Get(string name, string fallback) => Array.IndexOf(options, name) is >= 0 and var i ? options[i + 1] : fallback;
        float F(string name, string fallback) => float.Parse(Get(name, fallback), System.Globalization.CultureInfo.InvariantCulture);
        var sampler = new KvAdaQuant.Engine.Sampler(F("--temperature", "0"), int.Parse(Get("--top-k", "0"), System.Globalization.CultureInfo.InvariantCulture), 1f, ulong.Parse(Get("--seed", "42"), System.Globalization.CultureInfo.InvariantCulture))
        {
            MinP = F("--min-p", "0"),
            RepeatPenalty = F("--repeat-penalty", "1"),
            RepeatLastN = int.Parse(Get("--repeat-last-n", "64"), System.Globalization.CultureInfo.InvariantCulture),
            PresencePenalty = F("--presence-penalty", "0"),
            FrequencyPenalty = F("--frequency-penalty", "0"),
        };
        using var model = KvAdaQuant.Formats.ModelLoader.Load("stories260K");
        using var t = new KvAdaQuant.Engine.Transformer(model, 1);
        using var session = new KvAdaQuant.Engine.InferenceSession(t, new KvAdaQuant.KvCache.FullPrecisionKvCache(t.CacheLayout(256), half: false));
        var expected = new KvAdaQuant.Engine.Generator(session, model.Tokenizer!).Generate("Once upon a time", 40, sampler);
        Assert.Equal(expected.Tokens, got);

        // Without the options the story differs, so the options did reach the sampler.
        (rc, stdout, stderr) = KvaqProcess.Run(["generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "40", "--json", .. options.Chunk(2).Where(p => p[0] is "--temperature" or "--top-k" or "--seed").SelectMany(p => p)]);
        Assert.True(rc == 0, stderr);
        Assert.NotEqual(got, JsonDocument.Parse(stdout).RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToList());
    }

    [Fact]
    public void Prompt_file_misuse_is_an_error_naming_it()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "prompt.txt");
        File.WriteAllText(path, "Once");
        string missing = Path.Combine(tmp.Path, "missing.txt");
        (string[] Args, string Message)[] cases =
        [
            (["-f", path, "-p", "x"], "kvaq: error: --file and --prompt: give the prompt one way, not both"),
            (["-f", missing], $"kvaq: error: --file {missing}: no such file"),
            (["-f", tmp.Path], $"kvaq: error: --file {tmp.Path}: is a folder; give the prompt's text file"),
            (["-f", Fixtures.Stories260K], $"kvaq: error: --file {Fixtures.Stories260K}: not a text file (a NUL character at character 1: binary data such as a model or an image?)"),
        ];
        foreach (var (args, message) in cases)
        {
            var (rc, stdout, stderr) = KvaqProcess.Run(["generate", "-m", "stories260K", "-n", "4", .. args]);
            Assert.Equal(1, rc);
            Assert.Equal(message, stderr.Trim());
            Assert.Equal(string.Empty, stdout);
        }
    }

    [Fact]
    public void Ubatch_changes_the_split_of_the_prefill_not_the_tokens_or_their_logprobs()
    {
        string prompt = "Once upon a time, there was a little girl named Lily who liked to play in the park with her dog.";
        string? first = null;
        foreach (var ub in new[] { null, "1", "7" })
        {
            string[] args = ["generate", "-m", "stories3M-q80", "-p", prompt, "-n", "8", "--kv", "k4v2", "--logprobs", "2", "--json"];
            var (rc, stdout, stderr) = KvaqProcess.Run(ub is null ? args : [.. args, "--ubatch", ub]);
            Assert.True(rc == 0, stderr);
            var root = JsonDocument.Parse(stdout).RootElement;
            string tokens = root.GetProperty("tokens").ToString() + root.GetProperty("logprobs").ToString();
            first ??= tokens;
            Assert.Equal(first, tokens);
        }

        var (code, _, err) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--ubatch", "0");
        Assert.Equal(1, code);
        Assert.Contains("--ubatch must be at least 1, got 0", err);
        (code, _, err) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--device", "cuda", "--ubatch", "0");
        Assert.Equal(1, code);
        Assert.Contains("--ubatch must be at least 1, got 0", err);
        if (!KvAdaQuant.Gpu.Cuda.CudaContext.TryOpen(out var context, out _))
        {
            // --ubatch sets the GPU's prefill chunk; without a driver the error is --device cuda's alone.
            (code, _, err) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--device", "cuda", "--ubatch", "5");
            var (_, _, plain) = KvaqProcess.Run("generate", "-m", "stories260K", "-n", "2", "--device", "cuda");
            Assert.Equal(1, code);
            Assert.StartsWith("kvaq: error: --device cuda:", err, StringComparison.Ordinal);
            Assert.Equal(plain, err);
        }

        context?.Dispose();
    }

}
