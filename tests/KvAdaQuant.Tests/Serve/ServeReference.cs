using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Serve;

/// <summary>The library run in this process, as <c>kvaq generate</c> and <c>kvaq chat</c> run it: what the server must reproduce.</summary>
internal sealed class ServeReference : IDisposable
{
    private readonly Transformer _transformer;

    public ServeReference(string model, string kv, int ctx)
    {
        Model = ModelLoader.Load(model);
        _transformer = new Transformer(Model, 1);
        Session = new InferenceSession(_transformer, KvCacheFactory.Create(KvPlan.Parse(kv, Model.Config.Layers), _transformer.CacheLayout(ctx)));
    }

    public KvAdaQuant.Model.LlamaModel Model { get; }

    public KvAdaQuant.Tokenization.ITokenizer Tokenizer => Model.Tokenizer!;

    public InferenceSession Session { get; }

    /// <summary><see cref="Generator"/> on a cleared cache.</summary>
    public GenerationResult Generate(string prompt, int maxTokens, Sampler? sampler = null) =>
        new Generator(Session, Tokenizer).Generate(prompt, maxTokens, sampler ?? new Sampler());

    /// <summary>The first reply of a fresh <see cref="ChatSession"/>.</summary>
    public GenerationResult ChatReply(ChatTemplate template, string? system, string user, int maxTokens) =>
        new ChatSession(Session, Tokenizer, template, system).Reply(user, maxTokens, new Sampler());

    public void Dispose()
    {
        Session.Dispose();
        _transformer.Dispose();
        Model.Dispose();
    }
}
