namespace KvAdaQuant.Tests.Serve;

/// <summary>One <c>kvaq serve</c> of stories260K (FP32 cache, 64 positions, one thread) for a test class.</summary>
public sealed class Stories260KServer : IDisposable
{
    public const int Ctx = 64;

    public ServeProcess Server { get; } = new("-m", "stories260K", "--ctx", "64", "--threads", "1");

    public void Dispose() => Server.Dispose();
}
