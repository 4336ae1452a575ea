namespace KvAdaQuant.Engine.Speculative;

/// <summary>
/// One generation's speculative steps (<see cref="SpeculativeDecoding"/>). <see cref="Step"/> stands where a decode
/// step stood: it returns the logits after the token fed. A step either takes the next row of the last batch, when the
/// token fed is the guess that row followed (the guess was kept), or cuts the refused guesses from the cache and runs a new
/// batch: the token fed and fresh guesses. Sampling stays with the caller, one token at a time as without speculation.
/// </summary>
internal sealed class SpeculativeStepper
{
    private readonly InferenceSession _session;
    private readonly SpeculativeDecoding _settings;
    private readonly int _vocab;
    private readonly int[] _batch;
    private readonly float[] _rows;
    private int _guesses;      // guesses in the current batch (0: no batch pending)
    private int _cursor;       // rows of the current batch consumed after the first (guesses kept so far)
    private int _start;        // the cache's length before the current batch
    private readonly DraftLengthPolicy? _policy; // null: always ask for MaxDraft

    public SpeculativeStepper(IDecodeSession session, SpeculativeDecoding settings)
    {
        _session = session as InferenceSession
            ?? throw new NotSupportedException($"speculative decoding runs on the CPU engine; the KV cache is on {session.Device}");
        if (!InferenceSession.IsBatchInvariant(_session.Cache))
        {
            throw new ArgumentException(
                $"speculative decoding needs a KV cache whose results do not depend on the batch (fp32, fp16, or quantized per token without a residual window); {_session.Cache.Description} is not");
        }

        _settings = settings;
        _vocab = _session.Transformer.Config.VocabSize;
        _batch = new int[settings.MaxDraft + 1];
        _rows = new float[(settings.MaxDraft + 1) * _vocab];
        _policy = settings.Adaptive ? new DraftLengthPolicy(settings.MaxDraft) : null;
    }

    /// <summary>Guesses run through the model.</summary>
    public int Drafted { get; private set; }

    /// <summary>Guesses the sampler drew too (each saved a pass over the weights).</summary>
    public int Accepted { get; private set; }

    /// <summary>Batches run (passes over the weights that held guesses).</summary>
    public int Batches { get; private set; }

    /// <summary>Positions fed so far: the cache's length less the guesses of the current batch not yet kept.</summary>
    public int Position => _guesses > 0 ? _start + 1 + _cursor : _session.Position;

    /// <summary>What the speculation did, for <see cref="GenerationResult.Speculation"/>.</summary>
    public SpeculationStats Stats => new(Drafted, Accepted, Batches);

    /// <summary>
    /// Feeds <paramref name="token"/>, the last of <paramref name="sequence"/> (the prompt and every token generated so
    /// far), and returns the logits after it.
    /// </summary>
    public ReadOnlySpan<float> Step(int token, ReadOnlySpan<int> sequence)
    {
        if (_guesses > 0 && _cursor < _guesses && token == _batch[_cursor + 1])
        {
            _cursor++;
            Accepted++;
            return _rows.AsSpan(_cursor * _vocab, _vocab);
        }

        CutRefused();
        int position = _session.Position;
        int room = _session.Cache.Layout.Capacity - position - 1;
        int want = Math.Min(_policy?.Choose(room) ?? _settings.MaxDraft, room);
        int guesses = 0;
        if (want >= 1)
        {
            long drafting = System.Diagnostics.Stopwatch.GetTimestamp();
            guesses = _settings.Source.Draft(sequence, _batch.AsSpan(1, want));
            _policy?.ObserveDraft(guesses, System.Diagnostics.Stopwatch.GetElapsedTime(drafting).TotalSeconds);
            if (guesses == 0)
            {
                _policy?.NothingDrafted();
            }
        }

        if (guesses > want || guesses < 0)
        {
            throw new InvalidOperationException($"the draft source returned {guesses} tokens for room for {want}");
        }

        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        if (guesses == 0 || guesses < _settings.MinDraft)
        {
            var logits = _session.Decode(token);
            _policy?.Observe(1, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
            return logits;
        }

        _batch[0] = token;
        var rows = _rows.AsSpan(0, (guesses + 1) * _vocab);
        _session.Transformer.Forward(_batch.AsSpan(0, guesses + 1), position, _session.Cache, rows, allLogits: true);
        _policy?.Observe(guesses + 1, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
        _start = position;
        _guesses = guesses;
        _cursor = 0;
        Drafted += guesses;
        Batches++;
        return rows[.._vocab];
    }

    /// <summary>
    /// Leaves the session as decoding one token at a time would have: the cache holds the tokens fed, and its logits are
    /// those after the last of them.
    /// </summary>
    public void Finish()
    {
        if (_guesses > 0)
        {
            var last = _rows.AsSpan(_cursor * _vocab, _vocab);
            CutRefused();
            _session.SetLogits(last);
        }
    }

    // Cuts the current batch's positions after the last token fed, and adapts the next batch's length.
    private void CutRefused()
    {
        if (_guesses == 0)
        {
            return;
        }

        _policy?.Kept(_guesses, _cursor);
        _session.Truncate(_start + 1 + _cursor);
        _guesses = 0;
    }
}
