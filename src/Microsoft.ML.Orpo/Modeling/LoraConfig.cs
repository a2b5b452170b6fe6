namespace Microsoft.ML.Orpo.Modeling;

/// <summary>
/// What a set of LoRA adapters is (PEFT's <c>LoraConfig</c> for the fields we support): rank, alpha, dropout, the
/// targeted projection names, whether the factor is rank-stabilised (PEFT's <c>use_rslora</c>), and whether the frozen
/// base is kept in bfloat16 (ours; not a PEFT field), and whether the adapters are weight-decomposed (PEFT's <c>use_dora</c>).
/// </summary>
internal sealed record LoraConfig(int Rank, double Alpha, double Dropout, IReadOnlyList<string> TargetModules, bool BFloat16Base, bool UseRsLora = false,
    bool UseDora = false)
{
    /// <summary>The factor of the update, as PEFT's LoraLayer sets it: alpha / sqrt(r) with rsLoRA, else alpha / r.</summary>
    public double Scale => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;

    /// <summary>From the public options, checked: errors name the option and the value.</summary>
    public static LoraConfig From(LoraOptions options)
    {
        if (options.Rank <= 0)
            throw new ArgumentOutOfRangeException(nameof(options.Rank), options.Rank, $"OrpoOptions.Lora.Rank = {options.Rank}: the rank must be a positive integer (16 is usual).");
        if (!(options.Alpha > 0) || !double.IsFinite(options.Alpha))
            throw new ArgumentOutOfRangeException(nameof(options.Alpha), options.Alpha, $"OrpoOptions.Lora.Alpha = {options.Alpha}: alpha must be a positive finite number (the update is scaled by Alpha / Rank).");
        if (!(options.Dropout >= 0 && options.Dropout < 1))
            throw new ArgumentOutOfRangeException(nameof(options.Dropout), options.Dropout, $"OrpoOptions.Lora.Dropout = {options.Dropout}: the dropout probability must be in [0, 1).");
        if (options.TargetModules is null || options.TargetModules.Count == 0)
            throw new ArgumentException("OrpoOptions.Lora.TargetModules is empty: name the projections to adapt, e.g. LoraOptions.AllLinear.", nameof(options.TargetModules));
        var targets = new List<string>();
        foreach (var name in options.TargetModules)
        {
            if (string.IsNullOrWhiteSpace(name))
                throw new ArgumentException("OrpoOptions.Lora.TargetModules holds an empty name.", nameof(options.TargetModules));
            if (!targets.Contains(name, StringComparer.Ordinal)) targets.Add(name);
        }
        return new LoraConfig(options.Rank, options.Alpha, options.Dropout, targets, options.BFloat16Base, options.UseRsLora, options.UseDora);
    }

    /// <summary>Checks that every target names a projection of <paramref name="network"/>.</summary>
    public LoraConfig ValidateFor(LlamaForCausalLM network, string source)
    {
        var available = network.Projections().Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var target in TargetModules)
            if (!available.Contains(target))
                throw new ArgumentException(
                    $"{source}: target module '{target}' is not a projection of this model; it has {string.Join(", ", available.Order(StringComparer.Ordinal))}.", nameof(TargetModules));
        return this;
    }

    public bool Equals(LoraConfig? other) =>
        other is not null && Rank == other.Rank && Alpha.Equals(other.Alpha) && Dropout.Equals(other.Dropout)
        && TargetModules.SequenceEqual(other.TargetModules, StringComparer.Ordinal) && BFloat16Base == other.BFloat16Base
        && UseRsLora == other.UseRsLora && UseDora == other.UseDora;

    public override int GetHashCode() => HashCode.Combine(Rank, Alpha, Dropout, TargetModules.Count, BFloat16Base, UseRsLora, UseDora);
}
