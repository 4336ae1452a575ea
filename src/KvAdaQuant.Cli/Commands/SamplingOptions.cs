using System.CommandLine;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Cli.Commands;

/// <summary>The sampling options of <c>generate</c> and <c>chat</c>: <c>--temperature</c>, <c>--top-k</c>, <c>--top-p</c>, <c>--seed</c>.</summary>
internal sealed class SamplingOptions
{
    public Option<float> Temperature { get; } = new("--temperature") { Description = "sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0f };

    public Option<int> TopK { get; } = new("--top-k") { Description = "keep the k most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };

    public Option<float> TopP { get; } = new("--top-p") { Description = "nucleus sampling mass", DefaultValueFactory = _ => 1f };

    public Option<ulong> Seed { get; } = new("--seed") { Description = "random seed", DefaultValueFactory = _ => 42UL };

    /// <summary>The four options, to add to a command.</summary>
    public IEnumerable<Option> All => [Temperature, TopK, TopP, Seed];

    /// <summary>The sampler the options ask for; an error names the option out of range.</summary>
    public Sampler Create(ParseResult r) => new(r.GetValue(Temperature), r.GetValue(TopK), r.GetValue(TopP), r.GetValue(Seed));
}
