using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// A constant vector (e.g. rotary frequencies) as a tensor on the device and in the type last asked for, uploaded
/// once rather than at every forward pass (every decoded token); a model stays on one device, so that is once.
/// Thread-safe: concurrent generations share it.
/// </summary>
internal sealed class ConstantTable : IDisposable
{
    private readonly double[] values;
    private readonly object gate = new();
    private Tensor? table;

    public ConstantTable(double[] values) => this.values = values;

    /// <summary>The values on <paramref name="device"/> in <paramref name="type"/>.</summary>
    public Tensor On(Device device, ScalarType type)
    {
        lock (gate)
        {
            if (table is null || table.dtype != type || table.device_type != device.type || table.device_index != device.index)
            {
                // A replaced tensor may still be read by a concurrent call: it is left to the finalizer, not disposed.
                // Made outside inference mode even when generation asks first: training reuses it.
                using var normal = inference_mode(false);
                table = tensor(values, device: device).to_type(type).DetachFromDisposeScope();
            }
            return table;
        }
    }

    public void Dispose()
    {
        lock (gate)
        {
            table?.Dispose();
            table = null;
        }
    }
}
