using System.Text.Json;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve</c>'s llama-server sampling fields <c>typical_p</c>, <c>mirostat</c>, <c>mirostat_tau</c>,
/// <c>mirostat_eta</c>, <c>xtc_probability</c>, <c>xtc_threshold</c>, <c>dry_multiplier</c>, <c>dry_base</c>,
/// <c>dry_allowed_length</c>, <c>dry_penalty_last_n</c>, <c>dry_sequence_breakers</c> and <c>top_n_sigma</c>: a completion
/// with them equals the library's <see cref="Generator"/> with a <see cref="Sampler"/> set the same way; bad values are
/// 400 naming the field; <c>/props</c> lists them, with the server's options as the defaults.
/// </summary>
public class ServeSamplerFieldsTests(Stories260KServer fixture) : IClassFixture<Stories260KServer>
{
    private const string Prompt = "Lily and Ben went to the park. Lily and Ben played on the swing. Then Lily and Ben"; // 31 tokens, repeated in part
    private readonly ServeProcess _server = fixture.Server;

    public static TheoryData<string, Func<ITokenizerHolder, Sampler>> Cases => new()
    {
        { """ "temperature": 1, "seed": 3, "typical_p": 0.5 """, _ => new Sampler(1f, seed: 3) { TypicalP = 0.5f } },
        { """ "temperature": 1, "seed": 3, "mirostat": 2, "mirostat_tau": 3, "mirostat_eta": 0.2 """, _ => new Sampler(1f, seed: 3) { Mirostat = 2, MirostatTau = 3f, MirostatEta = 0.2f } },
        { """ "temperature": 1, "seed": 3, "mirostat": 1 """, _ => new Sampler(1f, seed: 3) { Mirostat = 1 } },
        { """ "temperature": 1, "seed": 3, "xtc_probability": 0.5, "xtc_threshold": 0.05 """, _ => new Sampler(1f, seed: 3) { XtcProbability = 0.5f, XtcThreshold = 0.05f } },
        { """ "temperature": 1, "seed": 3, "top_n_sigma": 0.5 """, _ => new Sampler(1f, seed: 3) { TopNSigma = 0.5f } },
        {
            """ "dry_multiplier": 2, "dry_base": 1.5, "dry_allowed_length": 1, "dry_penalty_last_n": 40 """,
            h => new Sampler { DryMultiplier = 2f, DryBase = 1.5f, DryAllowedLength = 1, DryPenaltyLastN = 40, DrySequenceBreakers = DrySequenceBreakers.FromStrings(h.Tokenizer, DrySequenceBreakers.Defaults) }
        },
        {
            """ "dry_multiplier": 2, "dry_sequence_breakers": [".", "\n"] """,
            h => new Sampler { DryMultiplier = 2f, DrySequenceBreakers = DrySequenceBreakers.FromStrings(h.Tokenizer, [".", "\n"]) }
        },
    };

    /// <summary>What a case needs of the reference: its tokenizer (DRY's breakers are matched on token text).</summary>
    public interface ITokenizerHolder
    {
        KvAdaQuant.Tokenization.ITokenizer Tokenizer { get; }
    }

    private sealed class Holder(ServeReference r) : ITokenizerHolder
    {
        public KvAdaQuant.Tokenization.ITokenizer Tokenizer => r.Tokenizer;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_completion_with_the_fields_equals_the_generator_with_the_sampler_set_alike(string fields, Func<ITokenizerHolder, Sampler> sampler)
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var expected = reference.Generate(Prompt, 20, sampler(new Holder(reference)));
        string Text(string extra) => _server.Post("/v1/completions", $$"""{"prompt": {{JsonSerializer.Serialize(Prompt)}}, "max_tokens": 20, {{extra}}}""")
            .Body.GetProperty("choices")[0].GetProperty("text").GetString()!;
        string text = Text(fields);
        Assert.Equal(expected.Text, text);

        // Without the sampler's fields (temperature and seed kept) the text differs: the fields were used.
        string plain = fields.Contains("\"seed\"", StringComparison.Ordinal) ? "\"temperature\": 1, \"seed\": 3" : "\"temperature\": 0";
        Assert.NotEqual(Text(plain), text);

        // /completion lists them in its generation_settings.
        var (status, native) = _server.Post("/completion", $$"""{"prompt": {{JsonSerializer.Serialize(Prompt)}}, "n_predict": 4, {{fields}}}""");
        Assert.Equal(200, status);
        var settings = native.GetProperty("generation_settings");
        foreach (var field in JsonDocument.Parse($"{{{fields}}}").RootElement.EnumerateObject())
        {
            Assert.Equal(field.Value.GetRawText().Replace(" ", string.Empty, StringComparison.Ordinal), settings.GetProperty(field.Name).GetRawText().Replace(" ", string.Empty, StringComparison.Ordinal));
        }
    }

    [Theory]
    [InlineData("typical_p", "2", "typical_p must be in [0, 1] (1 = off), got 2")]
    [InlineData("typical_p", "\"low\"", "typical_p must be a number, got \"low\"")]
    [InlineData("mirostat", "3", "mirostat must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0), got 3")]
    [InlineData("mirostat", "1.5", "mirostat must be an integer, got 1.5")]
    [InlineData("mirostat_tau", "-1", "mirostat_tau must be a finite number >= 0, got -1")]
    [InlineData("mirostat_eta", "1e39", "mirostat_eta must be a finite number >= 0, got 1e39")]
    [InlineData("xtc_probability", "1.5", "xtc_probability must be in [0, 1] (0 = off), got 1.5")]
    [InlineData("xtc_threshold", "-0.1", "xtc_threshold must be in [0, 1], got -0.1")]
    [InlineData("dry_multiplier", "-2", "dry_multiplier must be a finite number >= 0 (0 = off), got -2")]
    [InlineData("dry_base", "0.9", "dry_base must be a finite number >= 1, got 0.9")]
    [InlineData("dry_allowed_length", "-1", "dry_allowed_length must be an integer >= 0, got -1")]
    [InlineData("dry_penalty_last_n", "-5", "dry_penalty_last_n must be an integer >= -1 (-1 = the whole sequence, 0 = off), got -5")]
    [InlineData("dry_sequence_breakers", "[]", "dry_sequence_breakers must be a non-empty array of strings, got []")]
    [InlineData("dry_sequence_breakers", "\"\\n\"", "dry_sequence_breakers must be a non-empty array of strings, got \"\n\"")]
    [InlineData("dry_sequence_breakers", "[\".\", 5]", "dry_sequence_breakers[1] must be a non-empty string, got 5")]
    [InlineData("top_n_sigma", "\"x\"", "top_n_sigma must be a number, got \"x\"")]
    public void Bad_values_are_400_naming_the_field(string field, string value, string message)
    {
        foreach (var (path, body) in new[]
        {
            ("/v1/completions", $$"""{"prompt": "Hi", "{{field}}": {{value}}}"""),
            ("/v1/chat/completions", $$"""{"messages": [{"role": "user", "content": "Hi"}], "{{field}}": {{value}}}"""),
            ("/completion", $$"""{"prompt": "Hi", "{{field}}": {{value}}}"""),
        })
        {
            var (status, response) = _server.Post(path, body);
            Assert.Equal(400, status);
            var error = response.GetProperty("error");
            Assert.Equal(field, error.GetProperty("param").GetString());
            Assert.Equal(message, error.GetProperty("message").GetString());
        }
    }

    [Fact]
    public void Props_lists_the_fields_at_their_defaults()
    {
        var settings = _server.Get("/props").Body.GetProperty("default_generation_settings");
        Assert.Equal(1f, settings.GetProperty("typical_p").GetSingle());
        Assert.Equal(0, settings.GetProperty("mirostat").GetInt32());
        Assert.Equal(5f, settings.GetProperty("mirostat_tau").GetSingle());
        Assert.Equal(0.1f, settings.GetProperty("mirostat_eta").GetSingle());
        Assert.Equal(0f, settings.GetProperty("xtc_probability").GetSingle());
        Assert.Equal(0.1f, settings.GetProperty("xtc_threshold").GetSingle());
        Assert.Equal(0f, settings.GetProperty("dry_multiplier").GetSingle());
        Assert.Equal(1.75f, settings.GetProperty("dry_base").GetSingle());
        Assert.Equal(2, settings.GetProperty("dry_allowed_length").GetInt32());
        Assert.Equal(-1, settings.GetProperty("dry_penalty_last_n").GetInt32());
        Assert.Equal(["\n", ":", "\"", "*"], settings.GetProperty("dry_sequence_breakers").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(-1f, settings.GetProperty("top_n_sigma").GetSingle());
    }

    [Fact]
    public void The_server_options_are_the_defaults_of_every_request()
    {
        using var server = new ServeProcess(
            "-m", "stories260K", "--ctx", "64", "--threads", "1", "--temperature", "1", "--seed", "3", "--mirostat", "2", "--mirostat-ent", "3",
            "--dry-multiplier", "1.5", "--dry-sequence-breaker", "\\n", "--dry-sequence-breaker", ".", "--top-n-sigma", "1.5", "--xtc-threshold", "0.2");
        var settings = server.Get("/props").Body.GetProperty("default_generation_settings");
        Assert.Equal(2, settings.GetProperty("mirostat").GetInt32());
        Assert.Equal(3f, settings.GetProperty("mirostat_tau").GetSingle());
        Assert.Equal(1.5f, settings.GetProperty("dry_multiplier").GetSingle());
        Assert.Equal(["\n", "."], settings.GetProperty("dry_sequence_breakers").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(1.5f, settings.GetProperty("top_n_sigma").GetSingle());
        Assert.Equal(0.2f, settings.GetProperty("xtc_threshold").GetSingle());

        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var sampler = new Sampler(1f, seed: 3)
        {
            Mirostat = 2,
            MirostatTau = 3f,
            DryMultiplier = 1.5f,
            DrySequenceBreakers = DrySequenceBreakers.FromStrings(reference.Tokenizer, ["\n", "."]),
            TopNSigma = 1.5f,
            XtcThreshold = 0.2f,
        };
        var expected = reference.Generate(Prompt, 20, sampler);
        var (status, body) = server.Post("/v1/completions", $$"""{"prompt": {{JsonSerializer.Serialize(Prompt)}}, "max_tokens": 20}""");
        Assert.Equal(200, status);
        Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());
    }
}
