namespace KvAdaQuant.Engine.Speculative;

/// <summary>
/// How many guesses the next speculative batch asks for, chosen to make the most tokens a second from what the
/// generation has measured so far (<see cref="SpeculativeDecoding.Adaptive"/>):
/// <list type="bullet">
/// <item>the time of a forward pass over n positions, T(n), the median of each size's last 5 (a size's first pass, which
/// may pay the compilation of new code, is dropped once a second is timed; the median, not the least, because a plain
/// step is timed far more often than a batch, and the least of many samples would flatter T(1) against T(2) on a noisy
/// host and keep guesses out that pay); n = 1 is a plain decode step;
/// sizes not run yet are interpolated between measured ones, or extended along the slope of the two largest, and with one
/// size known a position is taken to cost a quarter of a decode step, so a first guess is tried at once), and</item>
/// <item>the chance α that a guess is kept when the ones before it were (each batch's kept guesses, and one refusal when it
/// lost some; recent batches weigh more, with a prior of one of each).</item>
/// </list>
/// k guesses then yield 1 + α + ... + α^k tokens in T(k + 1) + k D, D the time the draft source takes a guess (a draft
/// model's decode step; next to nothing for prompt lookup; a decayed average of seconds over guesses made), and the k with
/// the most tokens per second wins (k = 0, a plain step, yields 1 in T(1)). Memory-bound passes, where T barely grows with n (a GPU, a large model), get long
/// drafts; compute-bound ones (small models, or a CPU whose int8 products run out of compute past a couple of positions)
/// get short ones or none. After 8 steps in a row without guesses one guess is tried again, to keep α current, and after
/// 16 steps with guesses a plain step, to keep T(1) current. A try wins when its 1 + kept tokens took less time, the
/// source's asking and the batch together, than as many plain steps; while tries lose the gap grows to 16, 32, then 64
/// steps, and is back to 8 after a win. For a source whose asking costs next to nothing (prompt lookup) the gap stops at
/// 16, and a try where it had nothing to guess is made again at the next step. For a draft model a try where it had
/// nothing to guess is a lost one (it ran), and after three lost tries in a row (8, 24 and 56 steps after the last guess)
/// it is not asked again in this generation: each try makes it read every token since the last one, so a draft whose
/// guesses do not pay would otherwise go on costing a share of the whole text.
/// </summary>
internal sealed class DraftLengthPolicy
{
    private const int Window = 5;
    private const double Decay = 0.9;
    private const int ExploreFirst = 8;
    private const int ExploreMost = 64;
    private const int ExploreMostCheap = 16;
    private const int BaselineAfter = 16;
    private const int GiveUpAfter = 3;
    private readonly double[] _time;      // per size: the median of its recent samples, 0 = none yet
    private readonly double[][] _samples; // per size: the last Window samples, a ring
    private readonly int[] _count;
    private readonly bool[] _warm;
    private double _draftSeconds;
    private double _draftGuesses;
    private double _kept = 1;
    private double _lost = 1;
    private int _idle;
    private int _exploreAfter = ExploreFirst;
    private bool _exploring;
    private double _trySeconds; // the current try's time: the source's asking and the batch
    private int _lostInRow;     // tries lost in a row
    private bool _givenUp;      // a draft model whose tries kept losing: not asked again
    private int _guessing;

    /// <summary>Creates a policy for batches of up to <paramref name="maxGuesses"/> guesses.</summary>
    public DraftLengthPolicy(int maxGuesses)
    {
        _time = new double[maxGuesses + 2];
        _samples = [.. Enumerable.Range(0, maxGuesses + 2).Select(_ => new double[Window])];
        _count = new int[maxGuesses + 2];
        _warm = new bool[maxGuesses + 2];
    }

    /// <summary>The chance a guess is kept after kept ones, as estimated so far.</summary>
    public double Alpha => _kept / (_kept + _lost);

    /// <summary>The guesses to ask for, 0..<paramref name="most"/> (0: decode one token).</summary>
    public int Choose(int most)
    {
        most = Math.Min(most, _time.Length - 2);
        if (most <= 0)
        {
            return 0;
        }

        if (_time[1] == 0 || _guessing >= BaselineAfter)
        {
            _guessing = 0;
            return 0; // a plain step first (the baseline), and now and then again
        }

        double alpha = Alpha;
        int best = 0;
        double bestRate = 1 / _time[1];
        double tokens = 1, power = 1;
        for (int k = 1; k <= most; k++)
        {
            power *= alpha;
            tokens += power;
            double rate = tokens / (Time(k + 1) + (k * DraftTime));
            if (rate > bestRate)
            {
                (best, bestRate) = (k, rate);
            }
        }

        _exploring = false;
        if (best == 0 && !_givenUp && ++_idle >= _exploreAfter)
        {
            _idle = 0;
            _exploring = true;
            _trySeconds = 0;
            return 1;
        }

        if (best > 0)
        {
            _idle = 0;
            _guessing++;
        }

        return best;
    }

    /// <summary>
    /// Records that the draft source had nothing to guess when asked (prompt lookup without a match, a draft model unsure
    /// of its first token). Where asking costs next to nothing (the source's time a guess under 1 % of a decode step, as
    /// prompt lookup's), a try after idle steps is made again at the next step, where the source may have something,
    /// instead of waiting out the gap; a draft model's try counts as lost, since its asking cost a decode step of its own
    /// and more (the tokens it caught up on).
    /// </summary>
    public void NothingDrafted()
    {
        if (!_exploring)
        {
            return;
        }

        _exploring = false;
        if (Cheap)
        {
            _idle = _exploreAfter - 1;
        }
        else
        {
            LostTry();
        }
    }

    /// <summary>Whether tries have stopped: a draft model whose tries kept losing at the longest gap.</summary>
    public bool GivenUp => _givenUp;

    // A try lost: a longer gap before the next, and for a draft model, after GiveUpAfter losses in a row, no more tries.
    private void LostTry()
    {
        if (++_lostInRow >= GiveUpAfter && !Cheap)
        {
            _givenUp = true;
        }

        _exploreAfter = Math.Min(Cheap ? ExploreMostCheap : ExploreMost, 2 * _exploreAfter);
    }

    /// <summary>Records that a forward pass over <paramref name="positions"/> positions took <paramref name="seconds"/>.</summary>
    public void Observe(int positions, double seconds)
    {
        if (positions < 1 || positions >= _time.Length || !(seconds > 0))
        {
            return;
        }

        var ring = _samples[positions];
        if (_count[positions] == 1 && !_warm[positions])
        {
            _count[positions] = 0; // the size's first pass (compilation, cold caches) gives way to its second
            _warm[positions] = true;
        }

        if (_exploring && positions > 1)
        {
            _trySeconds += seconds;
        }

        ring[_count[positions]++ % Window] = seconds;
        int n = Math.Min(_count[positions], Window);
        Span<double> sorted = stackalloc double[Window];
        ring.AsSpan(0, n).CopyTo(sorted);
        sorted[..n].Sort();
        _time[positions] = n % 2 == 1 ? sorted[n / 2] : (sorted[(n / 2) - 1] + sorted[n / 2]) / 2;
    }

    // Asking the source costs next to nothing (under 1 % of a decode step a guess: prompt lookup): a lost try then costs
    // only T(2) - T(1), so tries stay frequent (every 16 steps at most) to catch a text that starts repeating.
    private bool Cheap => _time[1] > 0 && DraftTime < 0.01 * _time[1];

    /// <summary>The draft source's time a guess so far (D), 0 before any.</summary>
    public double DraftTime => _draftGuesses > 0 ? _draftSeconds / _draftGuesses : 0;

    /// <summary>Records that the draft source took <paramref name="seconds"/> to make <paramref name="guesses"/> guesses (asked for at least one).</summary>
    public void ObserveDraft(int guesses, double seconds)
    {
        if (!(seconds >= 0) || double.IsInfinity(seconds))
        {
            return;
        }

        if (_exploring)
        {
            _trySeconds += seconds;
        }

        // A draft that made no guess still cost its time: count it as one, so a source that keeps failing looks dear.
        _draftSeconds = (_draftSeconds * Decay) + seconds;
        _draftGuesses = (_draftGuesses * Decay) + Math.Max(guesses, 1);
    }

    /// <summary>Records that a batch of <paramref name="guesses"/> guesses kept the first <paramref name="kept"/>.</summary>
    public void Kept(int guesses, int kept)
    {
        _kept = (_kept * Decay) + kept;
        _lost = (_lost * Decay) + (kept < guesses ? 1 : 0);
        if (_exploring)
        {
            // Won: its 1 + kept tokens came faster than as many plain steps (the source's asking included).
            if (kept > 0 && _trySeconds < (1 + kept) * _time[1])
            {
                _exploreAfter = ExploreFirst;
                _lostInRow = 0;
            }
            else
            {
                LostTry();
            }

            _exploring = false;
        }
    }

    /// <summary>T(n): measured, interpolated between measured sizes, or extended past the largest.</summary>
    internal double Time(int n)
    {
        if (_time[n] > 0)
        {
            return _time[n];
        }

        int below = n - 1;
        while (below >= 1 && _time[below] == 0)
        {
            below--;
        }

        int above = n + 1;
        while (above < _time.Length && _time[above] == 0)
        {
            above++;
        }

        if (below >= 1 && above < _time.Length)
        {
            return _time[below] + ((_time[above] - _time[below]) * (n - below) / (above - below));
        }

        if (below < 1)
        {
            return _time[above] * n / above; // (never: T(1) is measured first)
        }

        int second = below - 1;
        while (second >= 1 && _time[second] == 0)
        {
            second--;
        }

        double slope = second >= 1 ? Math.Max(0, (_time[below] - _time[second]) / (below - second)) : _time[below] / (4 * below);
        return _time[below] + (slope * (n - below));
    }
}
