using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Chat;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo.Tests.Training;

/// <summary>
/// The checkpoint fingerprint identifies a run for resume, so it must not change between library versions: these
/// hashes were recorded on the code that wrote existing checkpoints. A change here means those checkpoints would be
/// refused as "a different run".
/// </summary>
[TestClass]
public sealed class CheckpointFingerprintTests
{
    private static readonly LlamaConfig Config = new() { MaxPositionEmbeddings = 2048 };

    private static readonly EncodedPair[] Pairs =
    [
        new([1, 5, 6], [7, 8, 2], [9, 2]),
        new([1, 40, 41, 42], [43, 2], [44, 45, 46, 2]),
    ];

    private static OrpoOptions Options(Action<OrpoOptions>? configure = null)
    {
        var options = new OrpoOptions { BaseModelPath = "unused" };
        configure?.Invoke(options);
        return options;
    }

    private static string Fingerprint(OrpoOptions options, int fallbackSeed = 17, OrpoTokenizer? tokenizer = null) =>
        CheckpointStore.Fingerprint(TrainingSettings.Resolve(options, Config, fallbackSeed, tokenizer), Pairs);

    private static void AssertFingerprint(string expected, OrpoOptions options, OrpoTokenizer? tokenizer = null)
    {
        string actual = Fingerprint(options, tokenizer: tokenizer);
        Assert.AreEqual(expected, actual, $"the fingerprint is now {actual}");
    }

    [TestMethod]
    public void DefaultOptionsKeepTheirFingerprint() =>
        AssertFingerprint("C0D49E45EC98DBB8819151AEAE5780D04E1FA6759546FEEF61C620C960AE0D40", Options());

    [TestMethod]
    public void ExplicitFloat32OptionsKeepTheirFingerprint() =>
        AssertFingerprint("A96C92D63403850B17496E9354557D5100630C95D40768D405E37526157C621B", Options(o =>
        {
            o.Lambda = 0.25; o.LearningRate = 1e-3; o.Epochs = 2; o.BatchSize = 4; o.GradientAccumulationSteps = 2;
            o.LearningRateSchedule = LearningRateSchedule.Cosine; o.WarmupRatio = 0.1; o.MaxGradNorm = 0; o.Seed = 3;
            o.MaxLength = 128; o.MaxPromptLength = 48; o.PromptTemplate = "Q: {prompt}\nA:"; o.SharedPromptForward = true;
            o.CheckpointDirectory = "/tmp/ignored"; o.CheckpointInterval = 7; o.ValidationInterval = 5;
        }));

    [TestMethod]
    public void BFloat16OptionsKeepTheirFingerprint() =>
        AssertFingerprint("137C45EB88F9DE3840D19F8617CB1ACBE8BD705339F9AA1281794CF19E975A03", Options(o =>
        {
            o.Precision = OrpoPrecision.BFloat16; o.LearningRate = 1e-3; o.IncludePromptInNll = true; o.WeightDecay = 0.01;
            o.Shuffle = false; o.GroupByLength = false; o.TruncateLongPrompts = true; o.RecomputeActivations = true; o.Seed = 0;
        }));

    [TestMethod]
    public void ChatTemplateOptionsKeepTheirFingerprint()
    {
        var tokenizer = OrpoTokenizer.Load(TestAssets.Stories260KHf);
        AssertFingerprint("0C0C9D6051216D27057C5794FFC43E4D47C6663A306777ECBA73A2B18F12481B", Options(o =>
        {
            o.ChatTemplate = ChatPreferenceDataTests.PlainTemplate; o.Lambda = 0.2; o.MaxLength = 256;
        }), tokenizer);
    }

    /// <summary>As <see cref="FineTuningRun"/> records new adapters: the settings carry the checked LoRA config.</summary>
    private static string LoraFingerprint(LoraOptions lora, string? initialAdapterSha256 = null)
    {
        var options = Options(o => o.Lora = lora);
        var settings = TrainingSettings.Resolve(options, Config, 17, null) with { Lora = LoraConfig.From(lora), InitialAdapterSha256 = initialAdapterSha256 };
        return CheckpointStore.Fingerprint(settings, Pairs);
    }

    [TestMethod]
    public void LoraOptionsKeepTheirFingerprint()
    {
        var lora = new LoraOptions { Rank = 8, Alpha = 16, Dropout = 0.05, TargetModules = ["q_proj", "v_proj"] };
        string pinned = LoraFingerprint(lora);
        Assert.AreEqual("B0C9D6E1CEA3A4EB5C0DDED75E98A494D00589264B1AD76C1F21EA9951ACD426", pinned, $"the fingerprint is now {pinned}");
        // Every LoRA field and the adapter a run starts from are part of it; full fine-tuning's is not the same.
        Assert.AreNotEqual(Fingerprint(Options()), pinned);
        foreach (var other in new[]
                 {
                     new LoraOptions { Rank = 4, Alpha = 16, Dropout = 0.05, TargetModules = ["q_proj", "v_proj"] },
                     new LoraOptions { Rank = 8, Alpha = 8, Dropout = 0.05, TargetModules = ["q_proj", "v_proj"] },
                     new LoraOptions { Rank = 8, Alpha = 16, Dropout = 0, TargetModules = ["q_proj", "v_proj"] },
                     new LoraOptions { Rank = 8, Alpha = 16, Dropout = 0.05, TargetModules = ["q_proj"] },
                     new LoraOptions { Rank = 8, Alpha = 16, Dropout = 0.05, TargetModules = ["q_proj", "v_proj"], BFloat16Base = true },
                 })
            Assert.AreNotEqual(pinned, LoraFingerprint(other));
        Assert.AreNotEqual(pinned, LoraFingerprint(lora, new string('A', 64)));
    }

    [TestMethod]
    public void ADrawnSeedIsNotPartOfTheFingerprint() =>
        Assert.AreEqual(Fingerprint(Options(), fallbackSeed: 1), Fingerprint(Options(), fallbackSeed: 2));
}
