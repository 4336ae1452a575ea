using System.CommandLine;
using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>kvaq generate --prompt-cache FILE</c>, as llama.cpp's: a file that exists is loaded (another model or plan, or a
/// damaged file, is an error) and the prompt evaluated only after the longest prefix the cache can keep; the state is
/// saved after the prompt (unless <c>--prompt-cache-ro</c>, or when the file already held the whole prompt), or after the
/// generation with <c>--prompt-cache-all</c>.
/// </summary>
internal sealed class PromptCache
{
    private readonly string _path;
    private readonly bool _readOnly;
    private readonly bool _all;
    private bool _unchanged;

    private PromptCache(string path, bool readOnly, bool all)
    {
        _path = path;
        _readOnly = readOnly;
        _all = all;
    }

    /// <summary>Whether the state is saved once the prompt is in the cache (not read-only, not --prompt-cache-all, not unchanged).</summary>
    public bool SavesAfterPrefill => !_readOnly && !_all && !_unchanged;

    /// <summary>Whether the state is saved after the generation (--prompt-cache-all).</summary>
    public bool SavesAll => !_readOnly && _all;

    /// <summary>The options' cache, or null without --prompt-cache; the other two alone are an error.</summary>
    public static PromptCache? From(ParseResult r, PromptCacheOptions options)
    {
        string? path = r.GetValue(options.File);
        bool ro = r.GetValue(options.ReadOnly), all = r.GetValue(options.All);
        if (path is null)
        {
            if (ro || all)
            {
                throw new ArgumentException($"{(ro ? "--prompt-cache-ro" : "--prompt-cache-all")} needs --prompt-cache FILE");
            }

            return null;
        }

        if (string.IsNullOrWhiteSpace(path))
        {
            throw new ArgumentException("--prompt-cache: empty path (give the file that holds the prompt's KV state)");
        }

        if (Directory.Exists(path))
        {
            throw new ArgumentException($"--prompt-cache {path}: is a folder; give a file");
        }

        return new PromptCache(path, ro, all);
    }

    /// <summary>
    /// Loads the file into <paramref name="session"/> when it exists and returns how many of <paramref name="prompt"/>'s
    /// tokens the cache now holds (0: start from scratch).
    /// </summary>
    public int Restore(InferenceSession session, IReadOnlyList<int> prompt)
    {
        if (!File.Exists(_path))
        {
            Console.Error.WriteLine($"[prompt cache {_path}: not found; {(_readOnly ? "--prompt-cache-ro: it will not be created" : "it will be created")}]");
            return 0;
        }

        SessionState state;
        using (var fs = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20))
        {
            state = SessionStateFile.Load(fs, session, $"--prompt-cache {_path}");
        }

        var cached = state.Tokens;
        int common = 0;
        while (common < cached.Count && common < prompt.Count && cached[common] == prompt[common])
        {
            common++;
        }

        int reused;
        if (common == cached.Count)
        {
            // The file holds a prefix of the prompt (or the whole of it, with the logits of its last token).
            reused = common;
        }
        else
        {
            // Keep the common prefix, less one token when it is the whole prompt: its logits are not in the file.
            int keep = Math.Min(common, prompt.Count - 1);
            if (keep > 0 && KvCacheState.CanTruncate(session.Cache, keep))
            {
                KvCacheState.Truncate(session.Cache, keep);
                reused = keep;
            }
            else
            {
                session.Reset();
                reused = 0;
                string why = keep == 0
                    ? "the prompt shares no token with it"
                    : $"its KV cache {session.Cache.Description} cannot drop positions {keep}..{cached.Count - 1} exactly (they are already quantized, and a quantized position cannot be made FP16 again)";
                Console.Error.WriteLine($"kvaq: note: --prompt-cache {_path}: the file's {cached.Count} tokens match the prompt's first {common} of {prompt.Count}, and {why}; evaluating the whole prompt");
            }
        }

        _unchanged = reused == prompt.Count && cached.Count == prompt.Count;
        Console.Error.WriteLine($"[prompt cache {_path}: {state.Bytes:N0} bytes, {cached.Count} tokens, KV cache {state.KvDescription}; reused {reused} of {prompt.Count} prompt tokens]");
        return reused;
    }

    /// <summary>Saves the session's state, <paramref name="tokens"/> being the tokens its cache holds; returns the line to print.</summary>
    public string Save(InferenceSession session, IReadOnlyList<int> tokens)
    {
        long bytes = SessionStateFile.SaveFile(_path, session, tokens);
        return $"[prompt cache {_path}: saved {tokens.Count} tokens, {bytes:N0} bytes (KV cache {session.Cache.Description}: {session.Cache.ByteCount:N0} bytes)]";
    }

    /// <summary>The line printed when nothing is saved, or null.</summary>
    public string? NotSaved() =>
        _readOnly ? $"[prompt cache {_path}: not updated (--prompt-cache-ro)]"
        : _unchanged && !_all ? $"[prompt cache {_path}: not updated (it holds the whole prompt already)]"
        : null;
}
