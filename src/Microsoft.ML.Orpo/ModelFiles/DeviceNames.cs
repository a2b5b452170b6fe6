using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>Parses the <c>Device</c> option: "cpu", "cuda" or "cuda:N".</summary>
internal static class DeviceNames
{
    public static void Validate(string? name) => ParseName(name);

    public static Device Parse(string? name)
    {
        var (type, index) = ParseName(name);
        if (type == DeviceType.CPU) return CPU;
        if (!cuda.is_available())
            throw new InvalidOperationException(
                $"Device '{name}' was requested but CUDA is not available: reference a CUDA libtorch runtime package and run on a machine with an NVIDIA GPU, or use Device = \"cpu\".");
        if (index >= cuda.device_count())
            throw new InvalidOperationException($"Device '{name}' does not exist: {cuda.device_count()} CUDA device(s) are visible.");
        return new Device(DeviceType.CUDA, index);
    }

    private static (DeviceType Type, int Index) ParseName(string? name)
    {
        string text = (name ?? "").Trim().ToLowerInvariant();
        if (text == "cpu") return (DeviceType.CPU, -1);
        if (text == "cuda") return (DeviceType.CUDA, 0);
        if (text.StartsWith("cuda:", StringComparison.Ordinal)
            && int.TryParse(text.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out int index))
            return (DeviceType.CUDA, index);
        throw new ArgumentException($"Device '{name}' is not recognised; use \"cpu\", \"cuda\" or \"cuda:N\".", "Device");
    }
}
