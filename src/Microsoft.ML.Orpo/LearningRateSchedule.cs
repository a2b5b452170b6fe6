namespace Microsoft.ML.Orpo;

/// <summary>How the learning rate changes after warm-up.</summary>
public enum LearningRateSchedule
{
    /// <summary>Stays at the base rate.</summary>
    Constant,
    /// <summary>Decays linearly to 0 at the last step (Hugging Face's default).</summary>
    Linear,
    /// <summary>Half-cosine decay to 0 at the last step.</summary>
    Cosine,
}
