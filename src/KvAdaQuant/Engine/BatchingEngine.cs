using System.Runtime.ExceptionServices;

namespace KvAdaQuant.Engine;

/// <summary>
/// Lets several threads, each driving its own <see cref="InferenceSession"/> on one <see cref="Engine.Transformer"/>
/// (a server's requests), run their decode steps together: a thread that asks for a step while another thread's step
/// runs waits, and the next step takes every token that queued meanwhile in one forward pass (<see cref="BatchDecoder"/>;
/// flat combining; the leader of a step waits up to <see cref="GatherMilliseconds"/> for as many sessions as the last
/// step had). Prefills run alone (<see cref="Exclusive"/>). Each sequence
/// gets the logits it would get alone (see <see cref="BatchDecoder"/>). <see cref="Session"/> wraps a session as an
/// <see cref="IDecodeSession"/> whose steps go through here.
/// </summary>
public sealed class BatchingEngine
{
    private readonly object _gate = new();
    private readonly BatchDecoder _decoder;
    private readonly List<Pending> _queue = [];
    private readonly List<InferenceSession> _sessions = [];
    private readonly List<int> _tokens = [];
    private bool _busy;
    private int _lastStep;

    /// <summary>The longest a step's leader waits for the sessions of the previous step to queue again.</summary>
    public const int GatherMilliseconds = 10;

    /// <summary>Creates the engine over <paramref name="transformer"/>.</summary>
    public BatchingEngine(Transformer transformer)
    {
        _decoder = new BatchDecoder(transformer);
    }

    /// <summary>The engine every session must run on.</summary>
    public Transformer Transformer => _decoder.Transformer;

    /// <summary>Decode steps run (forward passes, one or several sequences each).</summary>
    public long Steps { get; private set; }

    /// <summary>Tokens those steps decoded (all sequences).</summary>
    public long DecodedTokens { get; private set; }

    /// <summary>The most sequences one step has run.</summary>
    public int LargestStep { get; private set; }

    /// <summary>Decode steps waiting for the running step (or prefill) to end.</summary>
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
        var me = new Pending(session, token);
        List<Pending> batch;
        lock (_gate)
        {
            _queue.Add(me);
            Monitor.PulseAll(_gate); // a leader gathering its step may be waiting for this one
            while (_busy && !me.Done)
            {
                Monitor.Wait(_gate);
            }

            if (!me.Done)
            {
                // Lead this step. The sessions of the last step come back within microseconds of each other (they sample
                // and hand out their text between steps): wait briefly for as many, or the steps would alternate
                // between the first one back alone and the rest.
                _busy = true;
                long deadline = Environment.TickCount64 + GatherMilliseconds;
                while (_queue.Count < _lastStep && Environment.TickCount64 < deadline)
                {
                    Monitor.Wait(_gate, 1);
                }

                batch = [.. _queue];
                _queue.Clear();
            }
            else
            {
                batch = [];
            }
        }

        if (batch.Count > 0)
        {
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
        }

        if (me.Error is not null)
        {
            ExceptionDispatchInfo.Throw(me.Error);
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
        foreach (var p in batch)
        {
            if (p.Session.Position < p.Session.Cache.Layout.Capacity && !_sessions.Contains(p.Session))
            {
                _sessions.Add(p.Session);
                _tokens.Add(p.Token);
            }
            else
            {
                // A full cache (or the same session twice): its own decode gives it its own error.
                Single(p);
            }
        }

        try
        {
            if (_sessions.Count > 0)
            {
                _decoder.Decode(_sessions, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_tokens));
            }

            _lastStep = _sessions.Count;
            Steps += _sessions.Count > 0 ? 1 : 0;
            DecodedTokens += _sessions.Count;
            LargestStep = Math.Max(LargestStep, _sessions.Count);
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
            p.Session.Decode(p.Token);
        }
        catch (Exception e)
        {
            p.Error = e;
        }
    }

    private sealed class Pending(InferenceSession session, int token)
    {
        public InferenceSession Session { get; } = session;

        public int Token { get; } = token;

        public bool Done { get; set; }

        public Exception? Error { get; set; }
    }

    // A session whose decode steps go through the engine and whose prefills run alone; the rest is the session's own.
    private sealed class BatchingSession(BatchingEngine engine, InferenceSession session) : IDecodeSession
    {
        public int Position => session.Position;

        public int Capacity => session.Cache.Layout.Capacity;

        public long ByteCount => session.Cache.ByteCount;

        public string Device => "the CPU";

        public ReadOnlySpan<float> Logits => session.Logits;

        public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens)
        {
            var copy = tokens.ToArray();
            engine.Exclusive(() => session.Prefill(copy));
            return session.Logits;
        }

        public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, PositionLogitsHandler onLogits)
        {
            var copy = tokens.ToArray();
            engine.Exclusive(() => session.Prefill(copy, onLogits));
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
    }
}
