using System.Numerics.Tensors;
using KvAdaQuant.Grammar;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Engine;

/// <summary>
/// Chooses the next token. First the penalties on the tokens of the sequence so far (<see cref="RepeatPenalty"/>,
/// <see cref="PresencePenalty"/>, <see cref="FrequencyPenalty"/> over the last <see cref="RepeatLastN"/> tokens, as
/// llama.cpp's penalties sampler and transformers' <c>repetition_penalty</c>); then greedy at temperature 0, else
/// softmax(logits / T) (T finite) with optional top-k, top-p and min-p (in transformers' order: temperature, top-k, top-p,
/// min-p), drawn from a seeded generator. With the defaults (no penalty, no min-p) it keeps no state but its generator.
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
    private ulong _state;
    private float[] _probs = [];
    private int[] _index = [];
    private float[] _penalized = [];
    private int[] _counts = [];
    private int[] _distinct = [];
    private IReadOnlyDictionary<int, float> _logitBias = new Dictionary<int, float>();
    private float[] _masked = [];
    private bool[] _allowed = [];

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

    /// <summary>Whether any penalty is on (and so whether <see cref="Sample(ReadOnlySpan{float}, ReadOnlySpan{int})"/> reads the sequence).</summary>
    public bool HasPenalties => _repeatLastN != 0 && (_repeatPenalty != 1f || _presencePenalty != 0f || _frequencyPenalty != 0f);

    /// <summary>Whether every setting beyond temperature, top-k and top-p is at its default (what the GPU sampler does).</summary>
    public bool IsBasic => !HasPenalties && _minP == 0f && _logitBias.Count == 0 && Grammar is null;

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
    /// Picks a token from <paramref name="logits"/> after the penalties on <paramref name="sequence"/>, the tokens so far
    /// (prompt and generated, the last one the token these logits follow); it is read only when <see cref="HasPenalties"/>.
    /// </summary>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> sequence)
    {
        bool penalties = HasPenalties && sequence.Length > 0;
        if (penalties || _logitBias.Count > 0)
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

            logits = penalized;
        }

        if (Grammar is not { } grammar)
        {
            return SampleChain(logits);
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
        return chosen;
    }

    // Temperature, top-k, top-p, min-p and the draw (greedy at temperature 0).
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
        Kernels.SoftMax(p);
        var idx = _index.AsSpan(0, n);
        for (int i = 0; i < n; i++)
        {
            idx[i] = i;
        }

        int count = n;
        if (_topK > 0 || _topP < 1f || _minP > 0f)
        {
            var probsCopy = _probs;
            idx.Sort((a, b) => probsCopy[b].CompareTo(probsCopy[a]) is var cmp && cmp != 0 ? cmp : a.CompareTo(b));
            if (_topK > 0)
            {
                count = Math.Min(count, _topK);
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
        }

        float total = 0;
        for (int i = 0; i < count; i++)
        {
            total += p[idx[i]];
        }

        float r = NextFloat() * total;
        float acc = 0;
        for (int i = 0; i < count; i++)
        {
            acc += p[idx[i]];
            if (r < acc)
            {
                return idx[i];
            }
        }

        return idx[count - 1];
    }

    /// <summary>
    /// The penalties on <paramref name="logits"/> in place, over the last <see cref="RepeatLastN"/> tokens of
    /// <paramref name="sequence"/>: for each distinct token t there with c occurrences, l_t = l_t / penalty if l_t &gt; 0
    /// else l_t * penalty, then l_t -= c * frequency + presence (llama.cpp's order). Tokens outside the vocabulary are
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
            logits[t] = l - (_counts[t] * _frequencyPenalty) - _presencePenalty;
            _counts[t] = 0;
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
