using System.Text;
using System.Text.Json;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// The settings part of <see cref="CheckpointStore.Fingerprint"/>: the JSON that identifies a run for resume. Existing
/// checkpoints carry hashes of it, so its bytes must never change: the names, their order and the formatting are
/// those System.Text.Json wrote for the settings record when those checkpoints were made, spelled out here so that
/// changes to <see cref="TrainingSettings"/> cannot reach it.
/// </summary>
internal static class FingerprintJson
{
    /// <summary>
    /// The fields that decide the training trajectory. Where and how often checkpoints and validation passes are made
    /// is written as zero (resuming with other values is allowed), as are a seed drawn from the MLContext (the
    /// checkpoint records the one used) and recomputing activations (it trains bit-identical weights, tested).
    /// </summary>
    public static string Of(TrainingSettings s)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("Lambda", s.Lambda);
            w.WriteBoolean("IncludePromptInNll", s.IncludePromptInNll);
            w.WriteNumber("LearningRate", s.LearningRate);
            w.WriteNumber("Epochs", s.Epochs);
            w.WriteNumber("BatchSize", s.BatchSize);
            w.WriteNumber("GradientAccumulationSteps", s.GradientAccumulationSteps);
            w.WriteNumber("WeightDecay", s.WeightDecay);
            w.WriteNumber("AdamBeta1", s.AdamBeta1);
            w.WriteNumber("AdamBeta2", s.AdamBeta2);
            w.WriteNumber("AdamEpsilon", s.AdamEpsilon);
            w.WriteNumber("WarmupRatio", s.WarmupRatio);
            w.WriteNumber("Schedule", (int)s.Schedule);
            w.WriteNumber("MaxGradNorm", s.MaxGradNorm);
            w.WriteBoolean("Shuffle", s.Shuffle);
            w.WriteBoolean("GroupByLength", s.GroupByLength);
            w.WriteNumber("Seed", s.SeedIsExplicit ? s.Seed : 0);
            w.WriteBoolean("SeedIsExplicit", s.SeedIsExplicit);
            w.WriteNumber("MaxLength", s.MaxLength);
            w.WriteNumber("MaxPromptLength", s.MaxPromptLength);
            WriteStringOrNull(w, "PromptTemplate", s.PromptTemplate);
            // Written only when set, so runs without a chat template keep the fingerprints from before the option.
            if (s.ChatTemplate is not null) w.WriteString("ChatTemplate", s.ChatTemplate);
            w.WriteBoolean("TruncateLongPrompts", s.TruncateLongPrompts);
            w.WriteNumber("ValidationInterval", 0);
            w.WriteNull("CheckpointDirectory");
            w.WriteNumber("CheckpointInterval", 0);
            w.WriteNumber("CheckpointsToKeep", 0);
            w.WriteBoolean("SharedPromptForward", s.SharedPromptForward);
            w.WriteNumber("LogitsChunkRows", s.LogitsChunkRows);
            w.WriteBoolean("RecomputeActivations", false);
            // Written only for bfloat16, so float32 runs keep the fingerprints from before the option.
            if (s.Precision != OrpoPrecision.Float32) w.WriteNumber("Precision", (int)s.Precision);
            // Written only with adapters, so full fine-tuning keeps the fingerprints from before LoRA.
            if (s.Lora is { } lora)
            {
                w.WriteStartObject("Lora");
                w.WriteNumber("Rank", lora.Rank);
                w.WriteNumber("Alpha", lora.Alpha);
                w.WriteNumber("Dropout", lora.Dropout);
                w.WriteStartArray("TargetModules");
                foreach (var target in lora.TargetModules) w.WriteStringValue(target);
                w.WriteEndArray();
                w.WriteBoolean("BFloat16Base", lora.BFloat16Base);
                if (lora.UseRsLora) w.WriteBoolean("UseRsLora", true); // only when set: earlier LoRA runs keep their fingerprints
                if (lora.UseDora) w.WriteBoolean("UseDora", true);
                WriteStringOrNull(w, "InitialAdapterSha256", s.InitialAdapterSha256);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private static void WriteStringOrNull(Utf8JsonWriter w, string name, string? value)
    {
        if (value is null) w.WriteNull(name);
        else w.WriteString(name, value);
    }
}
