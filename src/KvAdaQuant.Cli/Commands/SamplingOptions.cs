using System.CommandLine;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// The sampling options of <c>generate</c> and <c>chat</c> (llama.cpp's names): <c>--temperature</c>, <c>--top-k</c>,
/// <c>--top-p</c>, <c>--min-p</c>, <c>--repeat-penalty</c>, <c>--repeat-last-n</c>, <c>--presence-penalty</c>,
/// <c>--frequency-penalty</c>, <c>--seed</c>.
/// </summary>
internal sealed class SamplingOptions
{
    public Option<float> Temperature { get; } = new("--temperature") { Description = "sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0f };

    public Option<int> TopK { get; } = new("--top-k") { Description = "keep the k most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };

    public Option<float> TopP { get; } = new("--top-p") { Description = "nucleus sampling mass", DefaultValueFactory = _ => 1f };

    public Option<float> MinP { get; } = new("--min-p") { Description = "keep tokens at least this fraction as likely as the most likely one (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<float> RepeatPenalty { get; } = new("--repeat-penalty") { Description = "divide positive (multiply negative) logits of recent tokens by this (1 = off)", DefaultValueFactory = _ => 1f };

    public Option<int> RepeatLastN { get; } = new("--repeat-last-n") { Description = "recent tokens the penalties look at (-1 = the whole sequence, 0 = off)", DefaultValueFactory = _ => 64 };

    public Option<float> PresencePenalty { get; } = new("--presence-penalty") { Description = "subtract from the logit of each recent token once (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<float> FrequencyPenalty { get; } = new("--frequency-penalty") { Description = "subtract from the logit of each recent token once per occurrence (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<ulong> Seed { get; } = new("--seed") { Description = "random seed", DefaultValueFactory = _ => 42UL };

    /// <summary>The options, to add to a command.</summary>
    public IEnumerable<Option> All => [Temperature, TopK, TopP, MinP, RepeatPenalty, RepeatLastN, PresencePenalty, FrequencyPenalty, Seed];

    /// <summary>The sampler the options ask for; an error names the option out of range.</summary>
    public Sampler Create(ParseResult r) => new(r.GetValue(Temperature), r.GetValue(TopK), r.GetValue(TopP), r.GetValue(Seed))
    {
        MinP = r.GetValue(MinP),
        RepeatPenalty = r.GetValue(RepeatPenalty),
        RepeatLastN = r.GetValue(RepeatLastN),
        PresencePenalty = r.GetValue(PresencePenalty),
        FrequencyPenalty = r.GetValue(FrequencyPenalty),
    };
}
