namespace KvAdaQuant.Tests;

/// <summary>Tests that measure process-wide quantities (allocation) run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NonParallelCollection
{
    public const string Name = "non-parallel";
}
