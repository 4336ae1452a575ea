using Xunit.Abstractions;

namespace KvAdaQuant.GpuTestRunner;

/// <summary>xunit's discovery/execution options as a dictionary; an unset option reads as its type's default.</summary>
public sealed class OptionBag : ITestFrameworkDiscoveryOptions, ITestFrameworkExecutionOptions
{
    private readonly Dictionary<string, object?> _values = new(StringComparer.Ordinal);

    public TValue GetValue<TValue>(string name) =>
        _values.TryGetValue(name, out object? value) && value is TValue typed ? typed : default!;

    public void SetValue<TValue>(string name, TValue value) => _values[name] = value;
}
