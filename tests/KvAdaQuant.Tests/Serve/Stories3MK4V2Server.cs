namespace KvAdaQuant.Tests.Serve;

/// <summary>One <c>kvaq serve</c> of stories3M-q80 with a K4V2 cache (512 positions, one thread) and an API key, for a test class.</summary>
public sealed class Stories3MK4V2Server : IDisposable
{
    public const string Key = "sk-test-4711";

    public const int Ctx = 512;

    public ServeProcess Server { get; } = new("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "512", "--threads", "1", "--api-key", Key);

    public void Dispose() => Server.Dispose();
}
