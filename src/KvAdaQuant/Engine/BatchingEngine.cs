using System.Runtime.ExceptionServices;

namespace KvAdaQuant.Engine;

/// <summary>
/// Lets several threads, each driving its own <see cref="InferenceSession"/> on one <see cref="Engine.Transformer"/>
/// (a server's requests), run their decode steps together: a thread that asks for a step while another thread's step
/// runs waits, and the next step takes every token that queued meanwhile in one forward pass (<see cref="BatchDecoder"/>;
/// flat combining; the leader of a step waits up to <see cref="GatherMilliseconds"/> for as many sessions as the last
/// step had). Prompts join those steps one chunk at a time (<see cref="Prefill"/>: llama-server's continuous batching);
/// prefills that hand out every position's logits run alone (<see cref="Exclusive"/>). Each sequence gets the logits it
/// would get alone (see <see cref="BatchDecoder.Step"/>). <see cref="Session"/> wraps a session as an
/// <see cref="IDecodeSession"/> whose steps go through here.
/// </summary>
public sealed class BatchingEngine
{
    private readonly object _gate = new();
    private readonly BatchDecoder _decoder;
    private readonly List<Pending> _queue = [];
    private readonly List<InferenceSession> _sessions = [];
    private readonly List<int> _tokens = [];
    private readonly List<int> _counts = [];
    private readonly List<Pending> _chunks = [];
    private long _tickets;
    private bool _busy;
    private readonly List<InferenceSession> _lastStep = [];

    /// <summary>The longest a step's leader waits for the sessions of the previous step to queue again.</summary>
    public const int GatherMilliseconds = 10;

    /// <summary>Creates the engine over <paramref name="transformer"/>.</summary>
    public BatchingEngine(Transformer transformer)
    {
        _decoder = new BatchDecoder(transformer);
    }

    /// <summary>The engine every session must run on.</summary>
    public Transformer Transformer => _decoder.Transformer;

    /// <summary>Steps run (forward passes over one or several sequences' decode tokens and prompt chunks).</summary>
    public long Steps { get; private set; }

    /// <summary>Tokens those steps decoded (all sequences).</summary>
    public long DecodedTokens { get; private set; }

    /// <summary>Prompt tokens those steps prefilled (<see cref="Prefill"/>).</summary>
    public long PromptTokens { get; private set; }

    /// <summary>Steps that ran prompt chunks and decode tokens together.</summary>
    public long MixedSteps { get; private set; }

    /// <summary>The most sequences one step has run.</summary>
    public int LargestStep { get; private set; }

    /// <summary>Decode tokens and prompt chunks waiting for the running step (or <see cref="Exclusive"/> work) to end.</summary>
    public int Waiting
    {
        get
        {
            lock (_gate)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>An <see cref="IDecodeSession"/> over <paramref name="session"/> whose decode steps are batched here.</summary>
    public IDecodeSession Session(InferenceSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        return ReferenceEquals(session.Transformer, Transformer)
            ? new BatchingSession(this, session)
            : throw new ArgumentException("the session runs on another Transformer than this engine's", nameof(session));
    }

    /// <summary>
    /// One decode step of <paramref name="session"/> with <paramref name="token"/>, run with whatever other sessions' steps
    /// are waiting; returns when the session's <see cref="InferenceSession.Logits"/> are the token's. A session whose cache
    /// is full fails alone, with the error a single decode gives.
    /// </summary>
    public void Decode(InferenceSession session, int token)
    {
        ArgumentNullException.ThrowIfNull(session);
        Run(new Pending(session, token));
    }

    /// <summary>
    /// Prefills <paramref name="session"/> with <paramref name="tokens"/> one <see cref="InferenceSession.BatchSize"/> chunk
    /// per step, each chunk in a forward pass with whatever other sessions' decode steps and chunks are waiting
    /// (llama-server's continuous batching: a long prompt no longer stops the other requests' decoding until it is done);
    /// a step takes prompt chunks up to <see cref="PromptTokensPerStep"/> tokens (at least one chunk), those of the prompt
    /// that came first before the others'. Returns when the
    /// session's <see cref="InferenceSession.Logits"/> are those of the last token, with the bits
    /// <see cref="InferenceSession.Prefill(ReadOnlySpan{int}, IForwardObserver?)"/> gives. A chunk that does not fit in
    /// the cache fails alone, with the error that prefill gives at that chunk.
    /// </summary>
    public void Prefill(InferenceSession session, ReadOnlySpan<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(session);
        var copy = tokens.ToArray();
        int batch = session.BatchSize;
        long ticket = Interlocked.Increment(ref _tickets);
        for (int i = 0; i < copy.Length; i += batch)
        {
            Run(new Pending(session, copy, i, Math.Min(batch, copy.Length - i), ticket));
        }
    }

    /// <summary>
    /// Most prompt tokens one step takes (chunks of several prefilling sessions); 0 (the default) for the model's
    /// <see cref="InferenceSession.InvariantBatchSize"/>, so a step's activations stay as small as one prefill batch's
    /// (<c>kvaq serve --ubatch</c> sets it with the sessions' batch size). A chunk larger than that runs in a step of its own
    /// prompt.
    /// </summary>
    public int PromptTokensPerStep { get; init; }

    private void Run(Pending me)
    {
        lock (_gate)
        {
            _queue.Add(me);
            Monitor.PulseAll(_gate); // a leader gathering its step may be waiting for this one
        }

        while (true)
        {
            List<Pending> batch;
            lock (_gate)
            {
                while (_busy && !me.Done)
                {
                    Monitor.Wait(_gate);
                }

                if (me.Done)
                {
                    break;
                }

                // Lead this step. The sessions of the last step come back within microseconds of each other (they sample
                // and hand out their text, or cut their prompt's next chunk, between steps): wait briefly for them, or the
                // steps would alternate between the first one back alone and the rest, and prompts would take turns.
                _busy = true;
                long deadline = Environment.TickCount64 + GatherMilliseconds;
                while (!LastStepBack() && Environment.TickCount64 < deadline)
                {
                    Monitor.Wait(_gate, 1);
                }

                batch = Take();
            }

            try
            {
                Run(batch);
            }
            finally
            {
                lock (_gate)
                {
                    foreach (var p in batch)
                    {
                        p.Done = true;
                    }

                    _busy = false;
                    Monitor.PulseAll(_gate);
                }
            }

            // A leader whose own chunk did not fit in the step it ran goes round again.
        }

        if (me.Error is not null)
        {
            ExceptionDispatchInfo.Throw(me.Error);
        }
    }

    // Whether every session of the last step has queued again. Called under the gate.
    private bool LastStepBack()
    {
        foreach (var s in _lastStep)
        {
            bool queued = false;
            foreach (var p in _queue)
            {
                queued |= ReferenceEquals(p.Session, s);
            }

            if (!queued)
            {
                return false;
            }
        }

        return true;
    }

    // Every decode token queued, and prompt chunks up to PromptTokensPerStep (at least one), oldest prompt first: a prompt
    // runs to its end before the next one starts (the first to come gets its first token soonest, then decodes in the
    // steps of the next one's chunks), rather than all prompts taking turns and ending together. The rest stay queued for
    // the next step. Called under the gate.
    private List<Pending> Take()
    {
        var batch = new List<Pending>(_queue.Count);
        _chunks.Clear();
        foreach (var p in _queue)
        {
            (p.Chunk is null ? batch : _chunks).Add(p);
        }

        if (_chunks.Count > 0)
        {
            _chunks.Sort((x, y) => x.Ticket.CompareTo(y.Ticket));
            int limit = PromptTokensPerStep > 0 ? PromptTokensPerStep : InferenceSession.InvariantBatchSize(Transformer.Config);
            int prompt = 0;
            foreach (var p in _chunks)
            {
                if (prompt == 0 || prompt + p.Count <= limit)
                {
                    prompt += p.Count;
                    p.Taken = true;
                    batch.Add(p);
                }
            }
        }

        _queue.RemoveAll(static p => p.Chunk is null || p.Taken); // the rest stay in order
        return batch;
    }

    /// <summary>
    /// Tells the engine that <paramref name="session"/> will not step again until it is given more work (its request
    /// ended), so the next step's leader does not wait <see cref="GatherMilliseconds"/> for it to queue again (it waits
    /// for every session of the last step otherwise). A session that steps again later joins as before.
    /// </summary>
    public void Idle(InferenceSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (!ReferenceEquals(session.Transformer, Transformer))
        {
            throw new ArgumentException("the session runs on another Transformer than this engine's", nameof(session));
        }

        lock (_gate)
        {
            if (_lastStep.Remove(session))
            {
                Monitor.PulseAll(_gate); // a leader gathering its step may be waiting only for this one
            }
        }
    }

    /// <summary>Sessions of the last step the next step's leader waits for (those not <see cref="Idle"/> since).</summary>
    internal int AwaitedSessions
    {
        get
        {
            lock (_gate)
            {
                return _lastStep.Count;
            }
        }
    }

    /// <summary>Runs <paramref name="work"/> (a prefill, a cache change) with no decode step running.</summary>
    public void Exclusive(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        lock (_gate)
        {
            while (_busy)
            {
                Monitor.Wait(_gate);
            }

            _busy = true;
        }

        try
        {
            work();
        }
        finally
        {
            lock (_gate)
            {
                _busy = false;
                Monitor.PulseAll(_gate);
            }
        }
    }

    private void Run(List<Pending> batch)
    {
        _sessions.Clear();
        _tokens.Clear();
        _counts.Clear();
        int prompt = 0, decoded = 0;
        foreach (var p in batch)
        {
            if (p.Session.Position + p.Count <= p.Session.Cache.Layout.Capacity && !_sessions.Contains(p.Session))
            {
                _sessions.Add(p.Session);
                _counts.Add(p.Count);
                if (p.Chunk is { } chunk)
                {
                    _tokens.AddRange(chunk.AsSpan(p.Start, p.Count));
                    prompt += p.Count;
                }
                else
                {
                    _tokens.Add(p.Token);
                    decoded++;
                }
            }
            else
            {
                // A full cache (or the same session twice): its own forward pass gives it its own error.
                Single(p);
            }
        }

        try
        {
            if (_sessions.Count > 0)
            {
                _decoder.Step(_sessions, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_counts), System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_tokens));
                Steps++;
                PromptTokens += prompt;
                DecodedTokens += decoded;
                MixedSteps += prompt > 0 && decoded > 0 ? 1 : 0;
                LargestStep = Math.Max(LargestStep, _sessions.Count);
            }

            _lastStep.Clear();
            _lastStep.AddRange(_sessions);
        }
        catch (Exception e)
        {
            foreach (var p in batch)
            {
                if (_sessions.Contains(p.Session))
                {
                    p.Error = e;
                }
            }
        }
        finally
        {
            _sessions.Clear();
        }
    }

    private static void Single(Pending p)
    {
        try
        {
            if (p.Chunk is { } chunk)
            {
                p.Session.Forward(chunk.AsSpan(p.Start, p.Count));
            }
            else
            {
                p.Session.Decode(p.Token);
            }
        }
        catch (Exception e)
        {
            p.Error = e;
        }
    }

    // A decode token, or a chunk of a prompt (Chunk[Start..Start + Count]).
    private sealed class Pending
    {
        public Pending(InferenceSession session, int token)
        {
            Session = session;
            Token = token;
            Count = 1;
        }

        public Pending(InferenceSession session, int[] chunk, int start, int count, long ticket)
        {
            Session = session;
            Chunk = chunk;
            Start = start;
            Count = count;
            Ticket = ticket;
        }

        public InferenceSession Session { get; }

        public int Token { get; }

        public int[]? Chunk { get; }

        public int Start { get; }

        public int Count { get; }

        // The order of the prompt's Prefill call among all prompts.
        public long Ticket { get; }

        public bool Done { get; set; }

        // A step took this prompt chunk.
        public bool Taken { get; set; }

        public Exception? Error { get; set; }
    }

    // A session whose decode steps and prompts go through the engine (prefills that hand out every position's logits run
    // alone); the rest is the session's own.
    private sealed class BatchingSession(BatchingEngine engine, InferenceSession session) : IDecodeSession
    {
        public int Position => session.Position;

        public int Capacity => session.Cache.Layout.Capacity;

        public long ByteCount => session.Cache.ByteCount;

        public string Device => "the CPU";

        public ReadOnlySpan<float> Logits => session.Logits;

        public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens)
        {
            engine.Prefill(session, tokens);
            return session.Logits;
        }

        public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, PositionLogitsHandler onLogits)
        {
            var copy = tokens.ToArray();
            engine.Exclusive(() => session.Prefill(copy, onLogits));
            return session.Logits;
        }

        public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, IForwardObserver observer)
        {
            var copy = tokens.ToArray();
            engine.Exclusive(() => session.Prefill(copy, observer));
            return session.Logits;
        }

        public ReadOnlySpan<float> Decode(int token)
        {
            engine.Decode(session, token);
            return session.Logits;
        }

        public bool CanTruncate(int length) => session.CanTruncate(length);

        public void Truncate(int length) => session.Truncate(length);

        public void Reset() => session.Reset();

        public void Idle() => engine.Idle(session);

        // Saved and restored only while no request holds the slot, so no step touches the session meanwhile.
        public InferenceSession StateSession => session;
    }
}
