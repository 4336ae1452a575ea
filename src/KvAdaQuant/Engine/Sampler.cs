using System.Numerics.Tensors;
using KvAdaQuant.Grammar;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Engine;

/// <summary>
/// Chooses the next token. First the logit biases, the penalties on the tokens of the sequence so far
/// (<see cref="RepeatPenalty"/>, <see cref="PresencePenalty"/>, <see cref="FrequencyPenalty"/> over the last
/// <see cref="RepeatLastN"/> tokens, as llama.cpp's penalties sampler and transformers' <c>repetition_penalty</c>) and
/// DRY (<see cref="DryMultiplier"/>), then a <see cref="Grammar"/>; then greedy at temperature 0, else softmax(logits / T)
/// (T finite) with optional top-n-sigma, top-k, typical, top-p, min-p and XTC in that order (temperature first, as
/// transformers; llama.cpp puts it last), or Mirostat in their place, drawn from a seeded generator. With the defaults
/// (no penalty, no min-p, no Mirostat) it keeps no state but its generator; Mirostat's mu is per sequence
/// (<see cref="Reset"/>).
/// </summary>
public sealed class Sampler
{
    private readonly float _temperature;
    private readonly int _topK;
    private readonly float _topP;
    private readonly float _minP;
    private readonly float _repeatPenalty = 1f;
    private readonly int _repeatLastN = 64;
    private readonly float _presencePenalty;
    private readonly float _frequencyPenalty;
    private readonly float _typicalP = 1f;
    private readonly int _mirostat;
    private readonly float _mirostatTau = 5f;
    private readonly float _mirostatEta = 0.1f;
    private readonly float _xtcProbability;
    private readonly float _xtcThreshold = 0.1f;
    private readonly float _dryMultiplier;
    private readonly float _dryBase = 1.75f;
    private readonly int _dryAllowedLength = 2;
    private readonly int _dryPenaltyLastN = -1;
    private readonly float _topNSigma = -1f;
    private float _mu = float.NaN; // Mirostat's running surprise bound; NaN: 2 tau at the next token (a sequence's start)
    private float _nextMu = float.NaN; // mu after the token last drawn, kept once that token is final
    private ulong _state;
    private float[] _probs = [];
    private int[] _index = [];
    private float[] _penalized = [];
    private int[] _counts = [];
    private int[] _distinct = [];
    private IReadOnlyDictionary<int, float> _logitBias = new Dictionary<int, float>();
    private float[] _masked = [];
    private bool[] _allowed = [];
    private int[] _dryZ = [];
    private readonly Dictionary<int, int> _dryMaxRepeat = [];
    private float[] _scores = [];

    /// <summary>Creates a sampler.</summary>
    public Sampler(float temperature = 0f, int topK = 0, float topP = 1f, ulong seed = 42)
    {
        Validate(temperature, topK, topP);
        _temperature = temperature;
        _topK = topK;
        _topP = topP;
        _state = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
    }

    /// <summary>
    /// Keep only tokens whose probability is at least this fraction of the most likely one's (after temperature, top-k and
    /// top-p; llama.cpp's <c>--min-p</c>, transformers' <c>min_p</c>); 0 (the default) keeps all, in [0, 1].
    /// </summary>
    public float MinP
    {
        get => _minP;
        init => _minP = value is >= 0f and <= 1f ? value : throw new ArgumentOutOfRangeException(nameof(MinP), $"--min-p must be in [0, 1], got {value}");
    }

    /// <summary>
    /// Divides the positive logits (multiplies the negative ones) of every token among the last <see cref="RepeatLastN"/> of
    /// the sequence by this (CTRL's repetition penalty: llama.cpp's <c>--repeat-penalty</c>, transformers'
    /// <c>repetition_penalty</c>); 1 (the default) is off; finite and &gt; 0.
    /// </summary>
    public float RepeatPenalty
    {
        get => _repeatPenalty;
        init => _repeatPenalty = value > 0f && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(RepeatPenalty), $"--repeat-penalty must be finite and > 0 (1 = off), got {value}");
    }

    /// <summary>How many of the sequence's last tokens the penalties look at: 64 (llama.cpp's default), 0 = none, -1 = all.</summary>
    public int RepeatLastN
    {
        get => _repeatLastN;
        init => _repeatLastN = value >= -1 ? value : throw new ArgumentOutOfRangeException(nameof(RepeatLastN), $"--repeat-last-n must be >= -1 (-1 = the whole sequence, 0 = off), got {value}");
    }

    /// <summary>Subtracted once from the logit of every token present among the last <see cref="RepeatLastN"/> (OpenAI's presence_penalty); 0 = off.</summary>
    public float PresencePenalty
    {
        get => _presencePenalty;
        init => _presencePenalty = float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(PresencePenalty), $"--presence-penalty must be finite, got {value}");
    }

    /// <summary>Subtracted from a token's logit once per occurrence among the last <see cref="RepeatLastN"/> (OpenAI's frequency_penalty); 0 = off.</summary>
    public float FrequencyPenalty
    {
        get => _frequencyPenalty;
        init => _frequencyPenalty = float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(FrequencyPenalty), $"--frequency-penalty must be finite, got {value}");
    }

    /// <summary>
    /// Locally typical sampling (llama.cpp's <c>--typical</c>, transformers' <c>typical_p</c>): of the tokens left by top-k,
    /// with probabilities q renormalized over them and their entropy H, keep those whose surprise -ln q is closest to H,
    /// fewest first, until their mass exceeds this; 1 (the default) is off, in [0, 1].
    /// </summary>
    public float TypicalP
    {
        get => _typicalP;
        init => _typicalP = value is >= 0f and <= 1f ? value : throw new ArgumentOutOfRangeException(nameof(TypicalP), $"--typical must be in [0, 1], got {value}");
    }

    /// <summary>
    /// Mirostat (llama.cpp's <c>--mirostat</c>): 0 (the default) off, 1 Mirostat (v1), 2 Mirostat 2.0. On, it replaces
    /// top-n-sigma, top-k, typical, top-p, min-p and XTC: after temperature it keeps the tokens whose surprise (-log2 p)
    /// is within a bound mu (v2; v1 estimates a top-k from mu and the distribution's Zipf exponent over the 100 most likely
    /// tokens), draws among them and moves mu by <see cref="MirostatEta"/> times the draw's surprise less
    /// <see cref="MirostatTau"/>. mu starts at 2 tau with each sequence (<see cref="Reset"/>).
    /// </summary>
    public int Mirostat
    {
        get => _mirostat;
        init => _mirostat = value is >= 0 and <= 2 ? value : throw new ArgumentOutOfRangeException(nameof(Mirostat), $"--mirostat must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0), got {value}");
    }

    /// <summary>Mirostat's target surprise tau in bits (llama.cpp's <c>--mirostat-ent</c>, default 5); finite and &gt;= 0.</summary>
    public float MirostatTau
    {
        get => _mirostatTau;
        init => _mirostatTau = value >= 0f && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(MirostatTau), $"--mirostat-ent must be finite and >= 0, got {value}");
    }

    /// <summary>Mirostat's learning rate eta (llama.cpp's <c>--mirostat-lr</c>, default 0.1); finite and &gt;= 0.</summary>
    public float MirostatEta
    {
        get => _mirostatEta;
        init => _mirostatEta = value >= 0f && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(MirostatEta), $"--mirostat-lr must be finite and >= 0, got {value}");
    }

    /// <summary>Mirostat's mu now: 2 <see cref="MirostatTau"/> at a sequence's start, then moved by each token drawn.</summary>
    public float MirostatMu => float.IsNaN(_mu) ? 2f * _mirostatTau : _mu;

    /// <summary>
    /// XTC, "exclude top choices" (llama.cpp's <c>--xtc-probability</c>): with this chance per token (drawn from the
    /// sampler's generator), the tokens at least <see cref="XtcThreshold"/> likely are removed but the least likely of
    /// them; 0 (the default) is off, in [0, 1].
    /// </summary>
    public float XtcProbability
    {
        get => _xtcProbability;
        init => _xtcProbability = value is >= 0f and <= 1f ? value : throw new ArgumentOutOfRangeException(nameof(XtcProbability), $"--xtc-probability must be in [0, 1], got {value}");
    }

    /// <summary>XTC's probability threshold (llama.cpp's <c>--xtc-threshold</c>, default 0.1); above 0.5 XTC never fires; in [0, 1].</summary>
    public float XtcThreshold
    {
        get => _xtcThreshold;
        init => _xtcThreshold = value is >= 0f and <= 1f ? value : throw new ArgumentOutOfRangeException(nameof(XtcThreshold), $"--xtc-threshold must be in [0, 1], got {value}");
    }

    /// <summary>
    /// DRY, "don't repeat yourself" (llama.cpp's <c>--dry-multiplier</c>): a token that would extend a repeat of n &gt;=
    /// <see cref="DryAllowedLength"/> tokens of the sequence's last <see cref="DryPenaltyLastN"/> has
    /// multiplier * base^(n - allowed length) taken from its logit; a repeat does not reach back over a
    /// <see cref="DrySequenceBreakers"/> breaker. 0 (the default) is off; finite and &gt;= 0.
    /// </summary>
    public float DryMultiplier
    {
        get => _dryMultiplier;
        init => _dryMultiplier = value >= 0f && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(DryMultiplier), $"--dry-multiplier must be finite and >= 0 (0 = off), got {value}");
    }

    /// <summary>DRY's base (llama.cpp's <c>--dry-base</c>, default 1.75); finite and &gt;= 1.</summary>
    public float DryBase
    {
        get => _dryBase;
        init => _dryBase = value >= 1f && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(DryBase), $"--dry-base must be finite and >= 1, got {value}");
    }

    /// <summary>The longest repeat DRY lets go unpenalized (llama.cpp's <c>--dry-allowed-length</c>, default 2); &gt;= 0.</summary>
    public int DryAllowedLength
    {
        get => _dryAllowedLength;
        init => _dryAllowedLength = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(DryAllowedLength), $"--dry-allowed-length must be >= 0, got {value}");
    }

    /// <summary>How many of the sequence's last tokens DRY looks at (llama.cpp's <c>--dry-penalty-last-n</c>): -1 (the default) all, 0 off.</summary>
    public int DryPenaltyLastN
    {
        get => _dryPenaltyLastN;
        init => _dryPenaltyLastN = value >= -1 ? value : throw new ArgumentOutOfRangeException(nameof(DryPenaltyLastN), $"--dry-penalty-last-n must be >= -1 (-1 = the whole sequence, 0 = off), got {value}");
    }

    /// <summary>DRY's sequence breakers as token sequences (<see cref="Engine.DrySequenceBreakers"/>), or null for none.</summary>
    public DrySequenceBreakers? DrySequenceBreakers { get; init; }

    /// <summary>
    /// Top-n-sigma (llama.cpp's <c>--top-n-sigma</c>): keep the tokens whose logit is within this many standard deviations
    /// (over the tokens not already banned) of the largest; at or below 0 (the default -1) it is off; finite.
    /// </summary>
    public float TopNSigma
    {
        get => _topNSigma;
        init => _topNSigma = float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(TopNSigma), $"--top-n-sigma must be finite (<= 0 = off), got {value}");
    }

    /// <summary>Whether XTC can fire: a probability above 0 and a threshold at most 0.5 (llama.cpp's).</summary>
    public bool HasXtc => _xtcProbability > 0f && _xtcThreshold <= 0.5f;

    /// <summary>Whether DRY is on (and so reads the sequence).</summary>
    public bool HasDry => _dryMultiplier != 0f && _dryPenaltyLastN != 0;

    /// <summary>Whether <see cref="Sample(ReadOnlySpan{float}, ReadOnlySpan{int})"/> reads the sequence (penalties or DRY on).</summary>
    public bool ReadsSequence => HasPenalties || HasDry;

    /// <summary>Starts a new sequence: Mirostat's mu goes back to 2 tau (<see cref="Generator"/> calls it as each generation starts).</summary>
    public void Reset() => _mu = float.NaN;

    /// <summary>
    /// Added to the logits of these tokens before anything else (llama.cpp's <c>--logit-bias</c>, OpenAI's <c>logit_bias</c>;
    /// first in llama.cpp's sampler chain, before the penalties); negative infinity bans a token. Empty (the default) is off.
    /// A bias that is NaN or positive infinity is refused; a token outside the logits is refused when sampling.
    /// </summary>
    public IReadOnlyDictionary<int, float> LogitBias
    {
        get => _logitBias;
        init
        {
            ArgumentNullException.ThrowIfNull(value);
            foreach (var (token, bias) in value)
            {
                if (token < 0 || float.IsNaN(bias) || float.IsPositiveInfinity(bias))
                {
                    throw new ArgumentOutOfRangeException(nameof(LogitBias), $"--logit-bias: token {token} with bias {bias}: tokens are ids >= 0, biases finite numbers or -inf");
                }
            }

            _logitBias = value;
        }
    }

    /// <summary>
    /// A grammar the sampled tokens must follow (llama.cpp's <c>--grammar</c>), or null (the default). Applied after the logit
    /// biases and the penalties, before temperature and the rest of the chain, as llama.cpp does, and cheaply: the token is
    /// first sampled as without a grammar and only checked; if the grammar refuses it, every refused token's logit is set
    /// to negative infinity and the token sampled again (so greedy picks the most likely allowed token, and without top-k,
    /// top-p and min-p the draw follows the model's distribution renormalized over the allowed tokens). The chosen token is
    /// accepted into the constraint's state; <see cref="Generator"/> resets it at the start of each generation. Where no
    /// token is allowed the sampler returns <see cref="GrammarConstraint.StopToken"/> and the generation ends (stop reason
    /// <c>grammar_dead_end</c>). Log-probabilities stay the model's own. The state is per sequence: a sampler with a grammar
    /// serves one generation at a time.
    /// </summary>
    public GrammarConstraint? Grammar { get; init; }

    /// <summary>Throws, naming the token, where <see cref="LogitBias"/> names a token outside a vocabulary of <paramref name="vocabSize"/>.</summary>
    public void CheckVocabulary(int vocabSize)
    {
        foreach (int token in _logitBias.Keys)
        {
            if (token >= vocabSize)
            {
                throw new ArgumentException($"--logit-bias: token {token} is outside the vocabulary of {vocabSize}");
            }
        }
    }

    /// <summary>Whether any penalty is on (one reason <see cref="Sample(ReadOnlySpan{float}, ReadOnlySpan{int})"/> reads the sequence; see <see cref="ReadsSequence"/>).</summary>
    public bool HasPenalties => _repeatLastN != 0 && (_repeatPenalty != 1f || _presencePenalty != 0f || _frequencyPenalty != 0f);

    /// <summary>Whether every setting beyond temperature, top-k and top-p is at its default (what the GPU sampler does).</summary>
    public bool IsBasic => !HasPenalties && _minP == 0f && _logitBias.Count == 0 && Grammar is null
        && _typicalP >= 1f && _mirostat == 0 && !HasXtc && !HasDry && _topNSigma <= 0f;

    /// <summary>Throws where a sampling setting is out of range: temperature finite and &gt;= 0, top-k &gt;= 0, top-p in (0, 1].</summary>
    public static void Validate(float temperature, int topK, float topP)
    {
        if (!(temperature >= 0 && float.IsFinite(temperature)))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), $"--temperature must be finite and >= 0, got {temperature}");
        }

        if (topK < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(topK), $"--top-k must be >= 0, got {topK}");
        }

        if (!(topP > 0 && topP <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(topP), $"--top-p must be in (0, 1], got {topP}");
        }
    }

    /// <summary>Index of the largest logit (first on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits) => TensorPrimitives.IndexOfMax(logits);

    /// <summary>Picks a token from <paramref name="logits"/> (no penalties: there is no sequence to look at).</summary>
    public int Sample(ReadOnlySpan<float> logits) => Sample(logits, []);

    /// <summary>
    /// Picks a token from <paramref name="logits"/> after the penalties and DRY on <paramref name="sequence"/>, the tokens
    /// so far (prompt and generated, the last one the token these logits follow); it is read only when
    /// <see cref="ReadsSequence"/>.
    /// </summary>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> sequence)
    {
        bool penalties = HasPenalties && sequence.Length > 0;
        bool dry = HasDry && sequence.Length > 0;
        if (penalties || dry || _logitBias.Count > 0)
        {
            if (_penalized.Length < logits.Length)
            {
                _penalized = new float[logits.Length];
            }

            var penalized = _penalized.AsSpan(0, logits.Length);
            logits.CopyTo(penalized);
            foreach (var (token, bias) in _logitBias)
            {
                if (token >= penalized.Length)
                {
                    throw new ArgumentException($"--logit-bias: token {token} is outside the vocabulary of {penalized.Length}");
                }

                penalized[token] += bias;
            }

            if (penalties)
            {
                ApplyPenalties(penalized, sequence);
            }

            if (dry)
            {
                ApplyDry(penalized, sequence);
            }

            logits = penalized;
        }

        if (Grammar is not { } grammar)
        {
            return Commit(SampleChain(logits));
        }

        int chosen = SampleChain(logits);
        if (!grammar.IsAllowed(chosen))
        {
            // Refused: mask every token the grammar refuses, and sample again.
            int n = logits.Length;
            if (_masked.Length < n)
            {
                _masked = new float[n];
                _allowed = new bool[n];
            }

            var allowed = _allowed.AsSpan(0, n);
            if (grammar.ComputeAllowed(allowed) == 0)
            {
                return grammar.StopToken >= 0
                    ? grammar.StopToken
                    : throw new InvalidOperationException("the grammar allows no token here and the tokenizer has no EOS to end the generation with");
            }

            var masked = _masked.AsSpan(0, n);
            logits.CopyTo(masked);
            for (int i = 0; i < n; i++)
            {
                if (!allowed[i])
                {
                    masked[i] = float.NegativeInfinity;
                }
            }

            chosen = SampleChain(masked);
        }

        grammar.Accept(chosen);
        return Commit(chosen);
    }

    // The token is final: Mirostat's mu moves by the draw that chose it (a draw the grammar refused does not count).
    private int Commit(int token)
    {
        if (_mirostat != 0 && _temperature > 0f)
        {
            _mu = _nextMu;
        }

        return token;
    }

    // Temperature, then top-n-sigma, top-k, typical, top-p, min-p and XTC (or Mirostat in their place), and the draw
    // (greedy at temperature 0).
    private int SampleChain(ReadOnlySpan<float> logits)
    {
        if (_temperature == 0f)
        {
            return ArgMax(logits);
        }

        int n = logits.Length;
        if (_probs.Length < n)
        {
            _probs = new float[n];
            _index = new int[n];
        }

        // softmax((l - max) / T): the largest logit maps to 0 first, so a tiny T sends the others to -infinity (weight 0)
        // instead of overflowing every logit to +-infinity (whose softmax is NaN).
        var p = _probs.AsSpan(0, n);
        TensorPrimitives.Subtract(logits, TensorPrimitives.Max(logits), p);
        TensorPrimitives.Divide(p, _temperature, p);
        if (_topNSigma > 0f && _mirostat == 0)
        {
            TopNSigmaMask(p, _topNSigma);
        }

        Kernels.SoftMax(p);
        var idx = _index.AsSpan(0, n);
        for (int i = 0; i < n; i++)
        {
            idx[i] = i;
        }

        if (_mirostat != 0)
        {
            return SampleMirostat(p, idx);
        }

        int start = 0;
        int count = Truncate(p, idx);
        if (HasXtc && count >= 2 && NextFloat() <= _xtcProbability)
        {
            start = XtcCut(p, idx[..count], _xtcThreshold);
            count -= start;
        }

        return Draw(p, idx.Slice(start, count), out _);
    }

    // Top-k, typical, top-p and min-p over the probabilities p: idx (0..n-1) sorted by probability, most likely first (ties
    // by id) where any of them (or XTC) is on, and how many of its first tokens they keep.
    private int Truncate(ReadOnlySpan<float> p, Span<int> idx)
    {
        int count = idx.Length;
        if (!(_topK > 0 || _topP < 1f || _minP > 0f || _typicalP < 1f || HasXtc))
        {
            return count;
        }

        var probsCopy = _probs;
        idx.Sort((a, b) => probsCopy[b].CompareTo(probsCopy[a]) is var cmp && cmp != 0 ? cmp : a.CompareTo(b));
        if (_topK > 0)
        {
            count = Math.Min(count, _topK);
        }

        if (_typicalP < 1f)
        {
            count = KeepTypical(p, idx[..count]);
        }

        if (_topP < 1f)
        {
            float cum = 0;
            for (int i = 0; i < count; i++)
            {
                cum += p[idx[i]];
                if (cum >= _topP)
                {
                    count = i + 1;
                    break;
                }
            }
        }

        if (_minP > 0f)
        {
            // Sorted by probability: the kept tokens are a prefix; the most likely one always stays.
            float threshold = _minP * p[idx[0]];
            int kept = 1;
            while (kept < count && p[idx[kept]] >= threshold)
            {
                kept++;
            }

            count = kept;
        }

        return count;
    }

    /// <summary>
    /// The tokens temperature, top-k, top-p and min-p keep of <paramref name="logits"/> (no other stage), most likely
    /// first (all in id order when none of the three is on): the set the draw picks from, computed by the same code as
    /// <see cref="Sample(ReadOnlySpan{float})"/>.
    /// </summary>
    public static int[] Kept(ReadOnlySpan<float> logits, float temperature, int topK = 0, float topP = 1f, float minP = 0f)
    {
        var s = new Sampler(temperature, topK, topP) { MinP = minP };
        int n = logits.Length;
        s._probs = new float[n];
        var p = s._probs.AsSpan();
        TensorPrimitives.Subtract(logits, TensorPrimitives.Max(logits), p);
        TensorPrimitives.Divide(p, temperature, p);
        Kernels.SoftMax(p);
        int[] idx = [.. Enumerable.Range(0, n)];
        return idx[..s.Truncate(p, idx)];
    }

    // Draws from p over the candidates (in their order), the probabilities renormalized over them; also the chosen one's
    // renormalized probability.
    private int Draw(ReadOnlySpan<float> p, ReadOnlySpan<int> candidates, out float chosenShare)
    {
        int count = candidates.Length;
        float total = 0;
        for (int i = 0; i < count; i++)
        {
            total += p[candidates[i]];
        }

        float r = NextFloat() * total;
        float acc = 0;
        for (int i = 0; i < count; i++)
        {
            acc += p[candidates[i]];
            if (r < acc)
            {
                chosenShare = p[candidates[i]] / total;
                return candidates[i];
            }
        }

        chosenShare = p[candidates[count - 1]] / total;
        return candidates[count - 1];
    }

    /// <summary>
    /// Top-n-sigma on scaled logits (<paramref name="logits"/>, in place): every one below max - n * sigma becomes negative
    /// infinity, sigma the population standard deviation of those that are not already negative infinity (llama.cpp's).
    /// </summary>
    public static void TopNSigmaMask(Span<float> logits, float n)
    {
        if (n <= 0f || logits.Length <= 1)
        {
            return;
        }

        float max = float.NegativeInfinity;
        double sum = 0;
        int valid = 0;
        foreach (float l in logits)
        {
            if (l != float.NegativeInfinity)
            {
                max = Math.Max(max, l);
                sum += l;
                valid++;
            }
        }

        if (valid == 0)
        {
            return;
        }

        double mean = sum / valid;
        double squares = 0;
        foreach (float l in logits)
        {
            if (l != float.NegativeInfinity)
            {
                squares += (l - mean) * (l - mean);
            }
        }

        float threshold = max - (n * (float)Math.Sqrt(squares / valid));
        for (int i = 0; i < logits.Length; i++)
        {
            if (logits[i] < threshold)
            {
                logits[i] = float.NegativeInfinity;
            }
        }
    }

    // Locally typical: of the candidates (sorted by probability), with q their probabilities renormalized and H the
    // entropy of q, keep the fewest of those with the smallest |-ln q - H| whose mass exceeds TypicalP (all if it never
    // does), returned sorted by probability again; the count kept.
    private int KeepTypical(ReadOnlySpan<float> p, Span<int> candidates)
    {
        int count = candidates.Length;
        double total = 0;
        foreach (int t in candidates)
        {
            total += p[t];
        }

        double entropy = 0;
        foreach (int t in candidates)
        {
            double q = p[t] / total;
            if (q > 0)
            {
                entropy -= q * Math.Log(q);
            }
        }

        if (_scores.Length < p.Length)
        {
            _scores = new float[p.Length];
        }

        var scores = _scores;
        foreach (int t in candidates)
        {
            double q = p[t] / total;
            scores[t] = q > 0 ? (float)Math.Abs(-Math.Log(q) - entropy) : float.PositiveInfinity;
        }

        var probs = _probs;
        candidates.Sort((a, b) => scores[a].CompareTo(scores[b]) is var c && c != 0 ? c : probs[b].CompareTo(probs[a]) is var d && d != 0 ? d : a.CompareTo(b));
        double cum = 0;
        int kept = count;
        for (int i = 0; i < count; i++)
        {
            cum += p[candidates[i]] / total;
            if (cum > _typicalP)
            {
                kept = i + 1;
                break;
            }
        }

        candidates[..kept].Sort((a, b) => probs[b].CompareTo(probs[a]) is var c && c != 0 ? c : a.CompareTo(b));
        return kept;
    }

    /// <summary>
    /// The tokens locally typical sampling with <paramref name="typicalP"/> keeps of softmax(<paramref name="logits"/>)
    /// (temperature 1, no other stage), most likely first: the set <see cref="TypicalP"/> draws from.
    /// </summary>
    public static int[] TypicalKept(ReadOnlySpan<float> logits, float typicalP)
    {
        var s = new Sampler(1f) { TypicalP = typicalP };
        int n = logits.Length;
        s._probs = new float[n];
        var p = s._probs.AsSpan();
        TensorPrimitives.Subtract(logits, TensorPrimitives.Max(logits), p);
        Kernels.SoftMax(p);
        int[] idx = [.. Enumerable.Range(0, n)];
        var probs = s._probs;
        idx.AsSpan().Sort((a, b) => probs[b].CompareTo(probs[a]) is var cmp && cmp != 0 ? cmp : a.CompareTo(b));
        int count = typicalP < 1f ? s.KeepTypical(p, idx) : n;
        return idx[..count];
    }

    /// <summary>
    /// XTC's cut, once it fires: of <paramref name="candidates"/> (sorted by probability <paramref name="p"/>, renormalized
    /// over them) the leading ones at least <paramref name="threshold"/> likely are removed but the last of them; returns
    /// how many to drop from the front (0 where fewer than two reach the threshold); tokens of probability 0 never reach it.
    /// </summary>
    public static int XtcCut(ReadOnlySpan<float> p, ReadOnlySpan<int> candidates, float threshold)
    {
        float total = 0;
        foreach (int t in candidates)
        {
            total += p[t];
        }

        int last = 0;
        // A token that cannot be drawn (probability 0: banned by the logit bias) never counts as reaching the threshold,
        // even a threshold of 0, or it could be the one kept.
        for (int i = 0; i < candidates.Length && p[candidates[i]] > 0f && p[candidates[i]] / total >= threshold; i++)
        {
            last = i;
        }

        return last;
    }

    // Mirostat (1 or 2) over every token, sorted by probability; mu moves once the token is final (Sample).
    private int SampleMirostat(ReadOnlySpan<float> p, Span<int> idx)
    {
        var probsCopy = _probs;
        idx.Sort((a, b) => probsCopy[b].CompareTo(probsCopy[a]) is var cmp && cmp != 0 ? cmp : a.CompareTo(b));
        float mu = MirostatMu;
        int count;
        if (_mirostat == 1)
        {
            count = MirostatV1Count(p, idx, mu, p.Length);
        }
        else
        {
            count = MirostatV2Count(p, idx, mu);
        }

        int chosen = Draw(p, idx[..count], out float share);
        _nextMu = MirostatNextMu(mu, share, _mirostatTau, _mirostatEta);
        return chosen;
    }

    /// <summary>
    /// Mirostat 2.0's cut: how many of the leading tokens (<paramref name="sorted"/> by probability <paramref name="p"/>)
    /// have a surprise -log2 p of at most <paramref name="mu"/>; at least 1.
    /// </summary>
    public static int MirostatV2Count(ReadOnlySpan<float> p, ReadOnlySpan<int> sorted, float mu)
    {
        int count = 0;
        while (count < sorted.Length && -MathF.Log2(p[sorted[count]]) <= mu)
        {
            count++;
        }

        return Math.Max(count, 1);
    }

    /// <summary>Mirostat's update after drawing a token whose probability among those kept was <paramref name="share"/>: mu - eta (-log2 share - tau).</summary>
    public static float MirostatNextMu(float mu, float share, float tau, float eta) => mu - (eta * (-MathF.Log2(share) - tau));

    /// <summary>
    /// Mirostat (v1)'s top-k: the Zipf exponent s estimated by least squares over the <c>m = 100</c> most likely tokens
    /// (<paramref name="sorted"/> by probability <paramref name="p"/>), then k = ((s - 1) 2^mu / (1 - N^(1 - s)))^(1/s) for a
    /// vocabulary of <paramref name="vocab"/>, at least 1 and at most the tokens there are; 1 where k is NaN or beyond int
    /// (llama.cpp's x86-64 conversion gives that).
    /// </summary>
    public static int MirostatV1Count(ReadOnlySpan<float> p, ReadOnlySpan<int> sorted, float mu, int vocab)
    {
        const int m = 100;
        float sumTiBi = 0;
        float sumTiSq = 0;
        for (int i = 0; i < m - 1 && i < sorted.Length - 1; i++)
        {
            float ti = MathF.Log((i + 2) / (float)(i + 1));
            float bi = MathF.Log(p[sorted[i]] / p[sorted[i + 1]]);
            sumTiBi += ti * bi;
            sumTiSq += ti * ti;
        }

        float sHat = sumTiBi / sumTiSq;
        float epsilonHat = sHat - 1;
        float k = MathF.Pow(epsilonHat * MathF.Pow(2, mu) / (1 - MathF.Pow(vocab, -epsilonHat)), 1 / sHat);
        // A k that is NaN or beyond int (the estimate s below 1 blows the formula up) converts to INT_MIN in llama.cpp's
        // x86-64 build, so it keeps one token: the same here.
        int kept = float.IsNaN(k) || k >= 2147483648f ? 1 : Math.Max((int)k, 1);
        return Math.Min(kept, sorted.Length);
    }

    /// <summary>
    /// The penalties on <paramref name="logits"/> in place, over the last <see cref="RepeatLastN"/> tokens of
    /// <paramref name="sequence"/>: for each distinct token t there with c occurrences, l_t = l_t / penalty if l_t &gt; 0
    /// else l_t * penalty, then l_t -= c * frequency + presence (llama.cpp's order and rounding). Tokens outside the vocabulary are
    /// an error.
    /// </summary>
    public void ApplyPenalties(Span<float> logits, ReadOnlySpan<int> sequence)
    {
        if (!HasPenalties)
        {
            return;
        }

        var window = _repeatLastN < 0 || _repeatLastN >= sequence.Length ? sequence : sequence[^_repeatLastN..];
        if (_counts.Length < logits.Length)
        {
            _counts = new int[logits.Length];
        }

        if (_distinct.Length < window.Length)
        {
            _distinct = new int[Math.Max(window.Length, 64)];
        }

        int distinct = 0;
        foreach (int t in window)
        {
            if ((uint)t >= (uint)logits.Length)
            {
                Array.Clear(_counts);
                throw new ArgumentOutOfRangeException(nameof(sequence), $"token {t} of the sequence is outside the vocabulary of {logits.Length}");
            }

            if (_counts[t]++ == 0)
            {
                _distinct[distinct++] = t;
            }
        }

        for (int i = 0; i < distinct; i++)
        {
            int t = _distinct[i];
            float l = logits[t];
            l = l > 0 ? l / _repeatPenalty : l * _repeatPenalty;
            logits[t] = l - ((_counts[t] * _frequencyPenalty) + _presencePenalty); // rounded as llama.cpp's
            _counts[t] = 0;
        }
    }

    /// <summary>
    /// DRY on <paramref name="logits"/> in place, over the last <see cref="DryPenaltyLastN"/> tokens of
    /// <paramref name="sequence"/> (llama.cpp's): a repeat may not reach back over the last sequence breaker; for each
    /// earlier position where the window's last n tokens (n &gt;= <see cref="DryAllowedLength"/>) occur too, the token
    /// that followed them there has multiplier * base^(n - allowed length) taken from its logit (the longest such n per
    /// token; a single-token breaker is never penalized; the exponent is capped where the power would overflow a float).
    /// </summary>
    public void ApplyDry(Span<float> logits, ReadOnlySpan<int> sequence)
    {
        if (!HasDry)
        {
            return;
        }

        int lastN = _dryPenaltyLastN < 0 ? sequence.Length : Math.Min(_dryPenaltyLastN, sequence.Length);
        if (lastN <= _dryAllowedLength)
        {
            return;
        }

        var w = sequence[^lastN..];
        foreach (int t in w)
        {
            if ((uint)t >= (uint)logits.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(sequence), $"token {t} of the sequence is outside the vocabulary of {logits.Length}");
            }
        }

        // How far back a repeat may reach: to just after the last breaker (whose head is i tokens from the end).
        int limit = lastN;
        if (DrySequenceBreakers is { } breakers)
        {
            for (int i = 0; i < lastN; i++)
            {
                int longest = breakers.LongestEndingAt(w, lastN - 1 - i);
                if (longest >= 0)
                {
                    limit = i - longest;
                    break;
                }
            }
        }

        if (limit < _dryAllowedLength)
        {
            return;
        }

        // z[k]: how many tokens the window's suffix shares with the suffix ending k tokens earlier (the Z-function of the
        // reversed window).
        if (_dryZ.Length < lastN)
        {
            _dryZ = new int[Math.Max(lastN, 64)];
        }

        var z = _dryZ.AsSpan(0, lastN);
        z.Clear();
        int last = lastN - 1;
        int left = 0, right = 0; // the rightmost box [left, right) where the reversed window matches its own start
        for (int k = 1; k < lastN; k++)
        {
            int len = k < right ? Math.Min(right - k, z[k - left]) : 0;
            while (k + len < lastN && w[last - len] == w[last - k - len])
            {
                len++;
            }

            z[k] = len;
            if (k + len > right)
            {
                left = k;
                right = k + len;
            }
        }

        // The token after each such position, with the longest repeat it would extend.
        _dryMaxRepeat.Clear();
        for (int k = 1; k < lastN; k++)
        {
            int repeat = Math.Min(z[k], limit);
            if (repeat >= _dryAllowedLength)
            {
                int next = w[last - k + 1];
                if (!_dryMaxRepeat.TryGetValue(next, out int longest) || longest < repeat)
                {
                    _dryMaxRepeat[next] = repeat;
                }
            }
        }

        int maxExponent = _dryBase > 1.000001f ? (int)(88.7228391f / MathF.Log(_dryBase)) : 0;
        foreach (var (token, repeat) in _dryMaxRepeat)
        {
            if (DrySequenceBreakers?.IsSingleTokenBreaker(token) == true)
            {
                continue;
            }

            int exponent = repeat - _dryAllowedLength;
            if (maxExponent > 0 && exponent > maxExponent)
            {
                exponent = maxExponent;
            }

            logits[token] -= (float)(_dryMultiplier * Math.Pow(_dryBase, exponent));
        }
    }

    private float NextFloat()
    {
        // xorshift64*, as in llama2.c
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return ((_state * 0x2545F4914F6CDD1DUL) >> 40) / 16777216.0f;
    }
}
