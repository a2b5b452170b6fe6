using System.Buffers.Binary;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>
/// A deterministic (seeded) mutation fuzzer: each input is a seed file with 1-4 mutations applied — bit flips,
/// random bytes, byte insertion and deletion, truncation, chunk duplication, "interesting" 32/64-bit integers
/// (huge, negative, overflowing sizes and offsets) written over the bytes, and, for text, a number in the text
/// replaced by an interesting one. A <see cref="Region"/> confines the byte-level mutations (e.g. to a header).
/// </summary>
internal sealed class MutationFuzzer
{
    private static readonly long[] InterestingIntegers =
    [
        0, 1, -1, 2, 7, 8, 255, 256, 0x7F, 0x80, 0xFFFF, 0x10000, int.MaxValue, int.MinValue, int.MaxValue - 7,
        uint.MaxValue, 1L << 32, 1L << 40, long.MaxValue, long.MinValue, long.MaxValue - 7, 100_000_000, 100_000_001,
        1 << 22, (1 << 22) + 1, 1 << 24, 65536, 65537, 262144, 1024, 1025, -2, -8,
    ];

    private static readonly string[] InterestingNumbers =
    [
        "0", "-1", "1", "2", "-0", "2147483647", "2147483648", "-2147483648", "4294967296", "9223372036854775807",
        "9223372036854775808", "18446744073709551616", "-9223372036854775809", "1e308", "1e400", "-1e400", "0.5", "1.5",
        "NaN", "Infinity", "1E+2", "100000000000000000000000000000", "3", "4194305", "65537", "null", "\"x\"", "[]", "{}", "true",
    ];

    private readonly Random random;

    public MutationFuzzer(int seed) => random = new Random(seed);

    /// <summary>A byte range the byte-level mutations stay in ([Start, End) of the seed).</summary>
    public readonly record struct Region(int Start, int End);

    /// <summary>A mutated copy of <paramref name="seed"/>.</summary>
    public byte[] Mutate(byte[] seed, Region? region = null, bool text = false)
    {
        var data = new List<byte>(seed);
        var (start, end) = region is { } r ? (r.Start, Math.Min(r.End, seed.Length)) : (0, seed.Length);
        int count = 1 + random.Next(4);
        for (int m = 0; m < count; m++)
        {
            end = Math.Min(end, data.Count);
            if (end <= start) { start = 0; end = data.Count; }
            int At() => end > start ? start + random.Next(end - start) : 0;
            int kind = random.Next(text ? 10 : 9);
            switch (kind)
            {
                case 0: // bit flip
                    if (data.Count > 0) { int i = At(); data[i] ^= (byte)(1 << random.Next(8)); }
                    break;
                case 1: // random byte
                    if (data.Count > 0) data[At()] = (byte)random.Next(256);
                    break;
                case 2: // insert bytes
                {
                    int n = 1 + random.Next(16);
                    var bytes = new byte[n];
                    random.NextBytes(bytes);
                    data.InsertRange(Math.Min(At(), data.Count), bytes);
                    end += n;
                    break;
                }
                case 3: // delete a range
                    if (data.Count > 0)
                    {
                        int i = At();
                        int n = Math.Min(1 + random.Next(32), data.Count - i);
                        data.RemoveRange(i, n);
                        end -= n;
                    }
                    break;
                case 4: // truncate (anywhere: headers and bodies alike)
                    if (data.Count > 0)
                    {
                        int keep = random.Next(data.Count);
                        data.RemoveRange(keep, data.Count - keep);
                    }
                    break;
                case 5: // interesting 32-bit integer
                case 6: // interesting 64-bit integer
                {
                    int width = kind == 5 ? 4 : 8;
                    if (data.Count < width) break;
                    int i = Math.Min(At(), data.Count - width);
                    if (random.Next(2) == 0) i -= i % width; // often aligned, as header fields are
                    long value = InterestingIntegers[random.Next(InterestingIntegers.Length)];
                    var buffer = new byte[8];
                    BinaryPrimitives.WriteInt64LittleEndian(buffer, value);
                    if (width == 4) BinaryPrimitives.WriteInt32LittleEndian(buffer, unchecked((int)value));
                    for (int k = 0; k < width; k++) data[i + k] = buffer[k];
                    break;
                }
                case 7: // duplicate a chunk
                    if (data.Count > 0)
                    {
                        int i = At();
                        int n = Math.Min(1 + random.Next(64), data.Count - i);
                        data.InsertRange(i, data.GetRange(i, n));
                        end += n;
                    }
                    break;
                case 8: // a byte set to an extreme value
                    if (data.Count > 0) data[At()] = random.Next(2) == 0 ? (byte)0xFF : (byte)0;
                    break;
                default: // text: replace a number (or a literal) by an interesting one
                    ReplaceNumber(data, start, end);
                    break;
            }
        }
        return data.ToArray();
    }

    private void ReplaceNumber(List<byte> data, int start, int end)
    {
        var candidates = new List<(int Start, int Length)>();
        for (int i = start; i < end && i < data.Count; i++)
        {
            if (!IsNumberByte(data[i]) || (i > 0 && IsNumberByte(data[i - 1]))) continue;
            int j = i;
            while (j < data.Count && IsNumberByte(data[j])) j++;
            if (data[i] != (byte)'.' && data[i] != (byte)'e') candidates.Add((i, j - i));
        }
        // String literals too (a value or a key), so a field of the wrong JSON type is tried.
        for (int i = start; i < end && i < data.Count; i++)
        {
            if (data[i] != (byte)'"') continue;
            int j = i + 1;
            while (j < data.Count && data[j] != (byte)'"') j += data[j] == (byte)'\\' ? 2 : 1;
            if (j >= data.Count) break;
            if (random.Next(3) == 0) candidates.Add((i, j - i + 1));
            i = j;
        }
        if (candidates.Count == 0) return;
        var (at, length) = candidates[random.Next(candidates.Count)];
        data.RemoveRange(at, length);
        data.InsertRange(at, Encoding.UTF8.GetBytes(InterestingNumbers[random.Next(InterestingNumbers.Length)]));
    }

    private static bool IsNumberByte(byte b) => b is (>= (byte)'0' and <= (byte)'9') or (byte)'-' or (byte)'.' or (byte)'e' or (byte)'E' or (byte)'+';

    /// <summary>The result of running one format's inputs.</summary>
    public sealed record Report(string Format, int Inputs, int Successes, IReadOnlyDictionary<string, int> Exceptions,
        long MaxAllocatedBytes, TimeSpan Elapsed, IReadOnlyList<string> Failures);

    /// <summary>
    /// Runs <paramref name="target"/> on <paramref name="iterations"/> mutations of <paramref name="seed"/>, each on a
    /// worker thread with a timeout, and classifies how each ended. A failure is an exception outside
    /// <paramref name="isClear"/>, a hang, or more managed allocation than <paramref name="allocationBound"/> allows
    /// for the input's length.
    /// </summary>
    public static Report Run(string format, byte[] seed, int iterations, int fuzzSeed, Action<byte[]> target,
        Func<Exception, bool> isClear, Func<int, long> allocationBound, Region? region = null, bool text = false,
        TimeSpan? timeout = null, string? saveFailuresTo = null)
    {
        var fuzzer = new MutationFuzzer(fuzzSeed);
        var exceptions = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var failures = new List<string>();
        int successes = 0;
        long maxAllocated = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var limit = timeout ?? TimeSpan.FromSeconds(20);
        for (int i = 0; i < iterations; i++)
        {
            // The unmutated seed first: it must load (a target that rejects everything would prove nothing).
            byte[] input = i == 0 ? seed : fuzzer.Mutate(seed, region, text);
            Exception? caught = null;
            long allocated = 0;
            var worker = new Thread(() =>
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                try { target(input); }
                catch (Exception e) { caught = e; }
                allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            }, 16 << 20) { IsBackground = true, Name = $"fuzz {format} #{i}" };
            worker.Start();
            if (!worker.Join(limit))
            {
                failures.Add($"{format} #{i}: did not finish within {limit.TotalSeconds:F0} s (hang).");
                Save(saveFailuresTo, format, i, input);
                break; // the stuck thread keeps running; stop this format rather than pile up more
            }
            maxAllocated = Math.Max(maxAllocated, allocated);
            if (allocated > allocationBound(input.Length))
            {
                failures.Add($"{format} #{i}: allocated {allocated:N0} managed bytes for a {input.Length:N0}-byte input (bound {allocationBound(input.Length):N0}).");
                Save(saveFailuresTo, format, i, input);
            }
            if (caught is null)
            {
                successes++;
                continue;
            }
            if (i == 0)
            {
                failures.Add($"{format}: the unmutated seed failed: {caught}");
                continue;
            }
            Exception outer = Unwrap(caught);
            string key = outer.GetType().Name;
            exceptions[key] = exceptions.TryGetValue(key, out int n) ? n + 1 : 1;
            if (!isClear(outer) || string.IsNullOrWhiteSpace(outer.Message))
            {
                failures.Add($"{format} #{i}: {outer.GetType().FullName}: {outer.Message}\n{outer.StackTrace}");
                Save(saveFailuresTo, format, i, input);
            }
        }
        return new Report(format, iterations, successes, exceptions, maxAllocated, clock.Elapsed, failures);
    }

    /// <summary>Reflection wrappers (ML.NET invokes loaders by reflection) are not what the user sees the cause as.</summary>
    public static Exception Unwrap(Exception e)
    {
        while (e is TargetInvocationException { InnerException: { } inner }) e = inner;
        return e;
    }

    /// <summary>Exceptions that always mean a bug when a reader meets bad bytes.</summary>
    public static bool IsBugSignal(Exception e) => e is NullReferenceException or IndexOutOfRangeException or OutOfMemoryException
        or AccessViolationException or InsufficientExecutionStackException or DivideByZeroException or OverflowException
        or InvalidCastException or KeyNotFoundException or ExternalException or EndOfStreamException
        or System.Text.Json.JsonException or ArrayTypeMismatchException or NotImplementedException;

    /// <summary>An argument exception thrown by this library's own checks (not by a collection or parser inside the BCL).</summary>
    public static bool IsOwnArgumentCheck(Exception e) =>
        e is ArgumentException && (e.TargetSite?.DeclaringType?.FullName ?? "").StartsWith("Microsoft.ML", StringComparison.Ordinal);

    private static void Save(string? folder, string format, int index, byte[] input)
    {
        if (folder is null) return;
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(folder, $"{format}-{index.ToString(CultureInfo.InvariantCulture)}.bin"), input);
    }
}
