namespace KvAdaQuant.Engine.Speculative;

/// <summary>What speculative decoding did in one generation.</summary>
/// <param name="Drafted">Guessed tokens run through the target model.</param>
/// <param name="Accepted">Guesses the sampler drew too: each is a token that cost no pass of its own over the weights.</param>
/// <param name="Batches">Batches with guesses run.</param>
public sealed record SpeculationStats(int Drafted, int Accepted, int Batches)
{
    /// <summary>Accepted over drafted (0 when nothing was drafted).</summary>
    public double AcceptanceRate => Drafted == 0 ? 0 : (double)Accepted / Drafted;
}
