using System.CommandLine;
using KvAdaQuant.Engine;
using KvAdaQuant.Engine.Speculative;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// Speculative decoding for <c>generate</c> and <c>chat</c> (<see cref="SpeculativeDecoding"/>): <c>--lookup-ngram N</c>
/// (prompt lookup: guesses copied from what followed the last n-gram earlier in the text) or <c>--model-draft F</c>
/// (<c>-md</c>, a smaller model of the same vocabulary guesses greedily), with llama.cpp's <c>--draft-max</c>,
/// <c>--draft-min</c>, <c>--draft-p-min</c> and a cache spec for the draft model, <c>--kv-draft</c>.
/// </summary>
internal sealed class SpeculativeOptions
{
    public Option<int?> LookupNgram { get; } = new("--lookup-ngram")
    {
        Description = $"speculative decoding by prompt lookup: guess the next tokens as what followed the latest earlier occurrence of the text's last N tokens (N down to 1; 1..{PromptLookupDraft.MaxNgramLimit}); the output is unchanged, only faster where the text repeats",
    };

    public Option<string?> ModelDraft { get; } = new("--model-draft", "-md")
    {
        Description = "speculative decoding with this draft model (a smaller model with the same vocabulary) guessing the next tokens greedily; the output is unchanged",
    };

    public Option<int?> DraftMax { get; } = new("--draft-max")
    {
        Description = $"most tokens guessed per step (1..{SpeculativeDecoding.MaxDraftLimit}, default {SpeculativeDecoding.DefaultMaxDraft}); the count adapts to how many are kept",
    };

    public Option<int?> DraftMin { get; } = new("--draft-min")
    {
        Description = "fewest guesses worth a batch; shorter drafts decode one token instead (default 0)",
    };

    public Option<float?> DraftPMin { get; } = new("--draft-p-min")
    {
        Description = $"the draft model stops guessing where its top token is less likely than this (0..1, default {DraftModel.DefaultMinProbability})",
    };

    public Option<bool> DraftFixed { get; } = new("--draft-fixed")
    {
        Description = "always ask for --draft-max guesses, instead of the count that measures fastest (pass times and guesses kept)",
    };

    public Option<string?> KvDraft { get; } = new("--kv-draft")
    {
        Description = "the draft model's KV cache: fp16 (default), fp32, or a per-token spec without a residual window (e.g. k4v2)",
    };

    /// <summary>The options, to add to a command.</summary>
    public IEnumerable<Option> All => [LookupNgram, ModelDraft, DraftMax, DraftMin, DraftPMin, DraftFixed, KvDraft];

    /// <summary>The option that turns speculative decoding on, if given (<c>--lookup-ngram</c> or <c>--model-draft</c>), else null.</summary>
    public string? Given(ParseResult r) =>
        r.GetValue(LookupNgram) is not null ? "--lookup-ngram" : r.GetValue(ModelDraft) is not null ? "--model-draft" : null;

    /// <summary>
    /// The settings the options give, or null without <c>--lookup-ngram</c> or <c>--model-draft</c>; a draft model is
    /// loaded (with the target's <paramref name="tokenizerPath"/> if one was given), checked against the target's
    /// vocabulary and given a session of <paramref name="contextLength"/> positions, which <see cref="Speculation.Dispose"/>
    /// frees. Errors name the option.
    /// </summary>
    public Speculation? Create(ParseResult r, LlamaModel target, string? tokenizerPath, int contextLength, int threads)
    {
        int? ngram = r.GetValue(LookupNgram);
        string? draftPath = r.GetValue(ModelDraft);
        if (ngram is not null && draftPath is not null)
        {
            throw new ArgumentException("--lookup-ngram and --model-draft: choose one way to guess tokens");
        }

        if (ngram is null && draftPath is null)
        {
            foreach (Option o in new Option[] { DraftMax, DraftMin, DraftPMin, DraftFixed, KvDraft })
            {
                if (r.GetResult(o) is { Implicit: false })
                {
                    throw new ArgumentException($"{o.Name} sets speculative decoding; it needs --lookup-ngram or --model-draft");
                }
            }

            return null;
        }

        if (ngram is not null && (r.GetResult(DraftPMin) is { Implicit: false } || r.GetResult(KvDraft) is { Implicit: false }))
        {
            throw new ArgumentException($"{(r.GetResult(DraftPMin) is { Implicit: false } ? "--draft-p-min" : "--kv-draft")} sets the draft model; --lookup-ngram has none");
        }

        int max = r.GetValue(DraftMax) ?? SpeculativeDecoding.DefaultMaxDraft;
        int min = r.GetValue(DraftMin) ?? 0;
        if (ngram is { } n)
        {
            return new Speculation(new SpeculativeDecoding(new PromptLookupDraft(n), max, min) { Adaptive = !r.GetValue(DraftFixed) }, $"prompt lookup, n-grams of {n} to 1", null);
        }

        // Checked before the draft model loads.
        _ = new SpeculativeDecoding(new PromptLookupDraft(), max, min);
        float pMin = r.GetValue(DraftPMin) ?? DraftModel.DefaultMinProbability;
        if (!(pMin is >= 0f and <= 1f))
        {
            throw new ArgumentException($"--draft-p-min must be in [0, 1], got {pMin}");
        }

        var draft = ModelLoader.Load(draftPath!, tokenizerPath);
        try
        {
            var draftTokenizer = draft.Tokenizer ?? throw new ArgumentException($"--model-draft {draftPath}: no tokenizer found beside it");
            try
            {
                DraftModel.CheckSameVocabulary(target.Tokenizer!, draftTokenizer);
                if (draft.Config.VocabSize != target.Config.VocabSize)
                {
                    throw new ArgumentException($"the draft model has {draft.Config.VocabSize} output logits and the target {target.Config.VocabSize}");
                }
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"--model-draft {draftPath}: {e.Message}", e);
            }

            var transformer = new Transformer(draft, threads);
            var plan = KvCacheFactory.ResolvePlan(r.GetValue(KvDraft) ?? "fp16", null, draft.Config.Layers);
            var session = new InferenceSession(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(contextLength)));
            try
            {
                var source = new DraftModel(session, pMin);
                return new Speculation(new SpeculativeDecoding(source, max, min) { Adaptive = !r.GetValue(DraftFixed) }, $"draft model {draft.Path}, KV cache {session.Cache.Description}", [session, transformer, draft]);
            }
            catch (ArgumentException e)
            {
                session.Dispose();
                transformer.Dispose();
                throw new ArgumentException($"--kv-draft: {e.Message}", e);
            }
        }
        catch
        {
            draft.Dispose();
            throw;
        }
    }

    /// <summary>Refuses, naming the options, speculative decoding on <paramref name="session"/> where it cannot run.</summary>
    public static void Check(IDecodeSession session, string cacheOption)
    {
        if (session is InferenceSession cpu && !InferenceSession.IsBatchInvariant(cpu.Cache))
        {
            throw new ArgumentException($"--lookup-ngram / --model-draft need a KV cache whose results do not depend on the batch (fp32, fp16, or per-token groups without a residual window); {cacheOption} {cpu.Cache.Description} is not");
        }
    }

    /// <summary>Speculative decoding settings and what they hold (a draft model and its session).</summary>
    internal sealed class Speculation(SpeculativeDecoding settings, string description, IDisposable[]? owned) : IDisposable
    {
        public SpeculativeDecoding Settings { get; } = settings;

        /// <summary>How the guesses are made, for the summary.</summary>
        public string Description { get; } = description;

        public void Dispose()
        {
            foreach (var d in owned ?? [])
            {
                d.Dispose();
            }
        }
    }

    /// <summary>The summary's note (empty without speculation).</summary>
    public static string Note(SpeculationStats? stats) => stats is null
        ? string.Empty
        : $"; speculative: {stats.Accepted} of {stats.Drafted} guessed tokens kept ({100 * stats.AcceptanceRate:F1} %) in {stats.Batches} batches";

    /// <summary>The <c>speculative</c> object of <c>--json</c> (null without speculation).</summary>
    public static object? Json(Speculation? speculation, SpeculationStats? stats) => speculation is null || stats is null
        ? null
        : new
        {
            Source = speculation.Description,
            DraftMax = speculation.Settings.MaxDraft,
            DraftMin = speculation.Settings.MinDraft,
            Adaptive = speculation.Settings.Adaptive,
            Drafted = stats.Drafted,
            Accepted = stats.Accepted,
            Batches = stats.Batches,
            AcceptanceRate = stats.AcceptanceRate,
        };
}
