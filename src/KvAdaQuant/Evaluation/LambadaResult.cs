namespace KvAdaQuant.Evaluation;

/// <summary>LAMBADA: share of passages whose last word greedy decoding reproduces exactly, and the perplexity of the last words.</summary>
public sealed record LambadaResult(double Acc, double Perplexity, int Items, double Seconds);
