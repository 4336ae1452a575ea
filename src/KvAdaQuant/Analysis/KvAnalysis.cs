using System.Text.Json;
using System.Text.Json.Serialization;
using KvAdaQuant.Allocation;

namespace KvAdaQuant.Analysis;

/// <summary>The result of <see cref="KvAnalyzer"/>: what <c>analysis.json</c> holds.</summary>
public sealed class KvAnalysis
{
    /// <summary>The model.</summary>
    public required AnalysisModelInfo Model { get; init; }

    /// <summary>Calibration source (file path or description).</summary>
    public required string Data { get; init; }

    /// <summary>Number of calibration tokens (BOS included): the rows of every captured matrix.</summary>
    public required int Tokens { get; init; }

    /// <summary>The calibration token ids.</summary>
    public required int[] TokenIds { get; init; }

    /// <summary>Bit widths measured (nominal bits; 1.58 for ternary).</summary>
    public required double[] Bits { get; init; }

    /// <summary>Quantization scheme per bit width (empty when none was measured).</summary>
    public required string[] Schemes { get; init; }

    /// <summary>Per-layer results.</summary>
    public required IReadOnlyList<LayerAnalysis> Layers { get; init; }

    /// <summary>Error propagation runs: for each bit width, only K quantized and only V quantized.</summary>
    public required IReadOnlyList<PropagationRun> Propagation { get; init; }

    /// <summary>Seconds the analysis took.</summary>
    public double Seconds { get; init; }

    /// <summary>
    /// Per-layer K/V norms for the allocators (<see cref="NormAwareAllocator"/>, <see cref="GroupAwareAllocator"/>), read
    /// through <c>analysis.json</c>'s schema exactly as <c>kvaq allocate --stats analysis.json</c> reads them.
    /// </summary>
    public LayerNorms Norms(NormScore score, NormSource source)
    {
        using var doc = JsonDocument.Parse(AnalysisWriter.ToJson(this));
        return LayerNormsReader.Parse(doc.RootElement, "analysis of " + Data, score, source);
    }

    /// <summary>Run of <paramref name="quantized"/> ("k" or "v") at <paramref name="bits"/>, or null.</summary>
    [JsonIgnore]
    public PropagationRun? this[string quantized, double bits] => Propagation.FirstOrDefault(p => p.Quantized == quantized && p.Bits == bits);
}
