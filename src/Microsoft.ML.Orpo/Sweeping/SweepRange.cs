using System.Globalization;

namespace Microsoft.ML.Orpo;

/// <summary>
/// The values one hyperparameter of an <see cref="OrpoSearchSpace"/> may take: a range on a log or linear scale
/// (grid points spread evenly on that scale; random search samples it continuously), or an explicit list.
/// </summary>
public sealed class SweepRange
{
    private readonly double[] grid;

    private SweepRange(double min, double max, bool isLogScale, double[] grid, bool isChoice)
    {
        Min = min;
        Max = max;
        IsLogScale = isLogScale;
        IsChoice = isChoice;
        this.grid = grid;
    }

    /// <summary>The smallest value.</summary>
    public double Min { get; }

    /// <summary>The largest value.</summary>
    public double Max { get; }

    /// <summary>Whether grid points and random samples are spread evenly in log space.</summary>
    public bool IsLogScale { get; }

    /// <summary>Whether the range is an explicit list of values (<see cref="Choice"/>).</summary>
    public bool IsChoice { get; }

    /// <summary>The values grid search and successive halving try, in increasing order.</summary>
    public IReadOnlyList<double> GridValues => grid;

    /// <summary>A range spread evenly in log space, e.g. <c>LogScale(0.01, 1, 5)</c> = 0.01, 0.0316, 0.1, 0.316, 1.</summary>
    /// <param name="min">Smallest value, &gt; 0.</param>
    /// <param name="max">Largest value, &gt;= <paramref name="min"/>.</param>
    /// <param name="gridPoints">Values tried by grid search (1 gives <paramref name="min"/> only).</param>
    public static SweepRange LogScale(double min, double max, int gridPoints = 5)
    {
        Check(min, max, gridPoints);
        if (!(min > 0)) throw new ArgumentOutOfRangeException(nameof(min), min, "A log-scale range needs min > 0.");
        double logMin = Math.Log(min), logMax = Math.Log(max);
        var values = Enumerable.Range(0, gridPoints)
            .Select(i => i == 0 ? min : i == gridPoints - 1 ? max : Math.Exp(logMin + (logMax - logMin) * i / (gridPoints - 1)))
            .ToArray();
        return new SweepRange(min, max, true, values, false);
    }

    /// <summary>A range spread evenly on a linear scale, e.g. <c>Linear(0.05, 1, 4)</c> = 0.05, 0.3667, 0.6833, 1.</summary>
    /// <param name="min">Smallest value.</param>
    /// <param name="max">Largest value, &gt;= <paramref name="min"/>.</param>
    /// <param name="gridPoints">Values tried by grid search (1 gives <paramref name="min"/> only).</param>
    public static SweepRange Linear(double min, double max, int gridPoints = 5)
    {
        Check(min, max, gridPoints);
        var values = Enumerable.Range(0, gridPoints)
            .Select(i => i == 0 ? min : i == gridPoints - 1 ? max : min + (max - min) * i / (gridPoints - 1))
            .ToArray();
        return new SweepRange(min, max, false, values, false);
    }

    /// <summary>An explicit list of values (duplicates removed, sorted); random search picks among them uniformly.</summary>
    /// <param name="values">At least one finite value.</param>
    public static SweepRange Choice(params double[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Length == 0) throw new ArgumentException("Choice needs at least one value.", nameof(values));
        if (values.Any(v => !double.IsFinite(v))) throw new ArgumentException("Choice values must be finite.", nameof(values));
        var sorted = values.Distinct().Order().ToArray();
        return new SweepRange(sorted[0], sorted[^1], false, sorted, true);
    }

    /// <summary>A random value: uniform among the choices, else uniform on the range's scale.</summary>
    internal double Sample(Random random)
    {
        if (IsChoice) return grid[random.Next(grid.Length)];
        double u = random.NextDouble();
        return IsLogScale ? Math.Exp(Math.Log(Min) + (Math.Log(Max) - Math.Log(Min)) * u) : Min + (Max - Min) * u;
    }

    /// <summary>E.g. "log[0.01, 1] x5" or "{0.05, 0.1, 0.5}".</summary>
    public override string ToString() => IsChoice
        ? "{" + string.Join(", ", grid.Select(v => v.ToString("G4", CultureInfo.InvariantCulture))) + "}"
        : string.Create(CultureInfo.InvariantCulture, $"{(IsLogScale ? "log" : "linear")}[{Min:G4}, {Max:G4}] x{grid.Length}");

    private static void Check(double min, double max, int gridPoints)
    {
        if (!double.IsFinite(min)) throw new ArgumentOutOfRangeException(nameof(min), min, "min must be finite.");
        if (!double.IsFinite(max) || max < min) throw new ArgumentOutOfRangeException(nameof(max), max, "max must be finite and >= min.");
        ArgumentOutOfRangeException.ThrowIfLessThan(gridPoints, 1);
    }
}
