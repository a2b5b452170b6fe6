namespace Microsoft.ML.Orpo;

/// <summary>
/// Low-rank adaptation (LoRA, Hu et al. 2021) with PEFT's semantics: every targeted projection computes
/// <c>y = W x + (Alpha / Rank) * B (A dropout(x))</c> (Alpha / sqrt(Rank) with <see cref="UseRsLora"/>; rescaled per row with <see cref="UseDora"/>), with A
/// (Rank x in) drawn Kaiming-uniform and B (out x Rank) zero, so training starts exactly at the base model. Only A and
/// B are trained: the base weights are frozen (no gradient, no optimiser state), which makes a step cheaper and its
/// memory a fraction of full fine-tuning's, and the result is a small PEFT adapter folder
/// (<see cref="OrpoTransformer.SaveAdapter"/>) or a merged model (<see cref="OrpoTransformer.MergeAdapter"/>). Set
/// <see cref="OrpoOptions.Lora"/> to use it.
/// </summary>
public sealed class LoraOptions
{
    /// <summary>The projections of every decoder layer: PEFT's <c>"all-linear"</c> for LLaMA-family models.</summary>
    public static IReadOnlyList<string> AllLinear { get; } =
        new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };

    /// <summary>The rank r of A and B. Default 16.</summary>
    public int Rank { get; set; } = 16;

    /// <summary>The scale numerator: the update is multiplied by Alpha / Rank (Alpha / sqrt(Rank) with <see cref="UseRsLora"/>). Default 32.</summary>
    public double Alpha { get; set; } = 32;

    /// <summary>
    /// Rank-stabilised LoRA (PEFT's <c>use_rslora</c>; Kalajdzievski 2023, arXiv:2312.03732): the update is multiplied
    /// by Alpha / sqrt(Rank) instead of Alpha / Rank, so its size does not shrink as the rank grows. Only the factor
    /// changes; <see cref="OrpoTransformer.SaveAdapter"/> writes it and adapters saved with it load with it. Default false.
    /// </summary>
    public bool UseRsLora { get; set; }

    /// <summary>
    /// Weight-decomposed LoRA (PEFT's <c>use_dora</c>; Liu et al. 2024, arXiv:2402.09353): each targeted projection also
    /// trains a magnitude vector m (one value per output row, initialised to the row norms of W) and computes
    /// <c>y = W x + (m / n - 1) W dropout(x) + (m / n) s B (A dropout(x))</c>, with n the row norms of <c>W + s B A</c>
    /// treated as a constant (the paper's section 4.3, as PEFT does). Without dropout that is
    /// <c>(m / n) (W x + s B A x)</c>: the LoRA output with each row rescaled. Merging gives <c>(m / n) (W + s B A)</c>.
    /// With <see cref="Dropout"/> above 0 a training step runs the base product a second time, on the dropped input, as
    /// PEFT does; set Dropout to 0 to avoid it. The magnitude gets no weight decay (it is a vector, like norm weights).
    /// llama.cpp's adapter format has no magnitude, so <see cref="OrpoTransformer.SaveAdapterGguf"/> refuses a DoRA
    /// adapter: merge it (<see cref="OrpoTransformer.SaveGguf"/>) instead. Default false.
    /// </summary>
    public bool UseDora { get; set; }

    /// <summary>Dropout probability on the adapter's input during training (never in generation or evaluation). Default 0.05.</summary>
    public double Dropout { get; set; } = 0.05;

    /// <summary>
    /// The projections that get an adapter, by their Hugging Face module name (<c>q_proj</c>, <c>k_proj</c>,
    /// <c>v_proj</c>, <c>o_proj</c>, <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c>), in every layer. Default
    /// <see cref="AllLinear"/>.
    /// </summary>
    public IList<string> TargetModules { get; set; } = AllLinear.ToList();

    /// <summary>
    /// Keep the frozen decoder projections in bfloat16, halving their memory; the adapters, their gradients and AdamW
    /// state stay float32, and each product runs in float32 on the bfloat16-rounded weights. The embedding, norms and
    /// LM head stay float32. Training, generation and evaluation then use the rounded base, so results differ slightly
    /// from a float32 base. The base model is loaded with its projections in bfloat16 (rounded as each tensor is read),
    /// so loading never holds them in float32. Default false.
    /// </summary>
    public bool BFloat16Base { get; set; }

    /// <summary>A copy with its own <see cref="TargetModules"/> list.</summary>
    public LoraOptions Clone()
    {
        var copy = (LoraOptions)MemberwiseClone();
        copy.TargetModules = TargetModules.ToList();
        return copy;
    }
}
