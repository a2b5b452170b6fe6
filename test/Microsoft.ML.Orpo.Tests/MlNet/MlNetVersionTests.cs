using Microsoft.ML.Data;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.MlNet;

/// <summary>
/// The model zip is written and read only on the Microsoft.ML releases its bridge was verified on; everything else
/// (generation, encoding, evaluation, export, training) never touches the bridge and works on any release.
/// </summary>
[TestClass]
[DoNotParallelize] // the simulated version is process-wide
public sealed class MlNetVersionTests
{
    private const string Unverified = "7.1.0";
    private const string Prompt = "Once upon a time, there was a little girl named";

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }

    [TestMethod]
    public void TheLoadedReleaseIsReadFromMicrosoftMlItself()
    {
        string informational = typeof(Microsoft.ML.Runtime.ComponentCatalog).Assembly
            .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .Cast<System.Reflection.AssemblyInformationalVersionAttribute>().Single().InformationalVersion;
        Assert.AreEqual(informational.Split('+')[0], MlNetVersion.Loaded);
        Assert.IsTrue(MlNetVersion.IsVerified);
        using (MlNetVersion.Simulate(Unverified))
        {
            Assert.AreEqual(Unverified, MlNetVersion.Loaded);
            Assert.IsFalse(MlNetVersion.IsVerified);
            Assert.Throws<InvalidOperationException>(() => MlNetVersion.Simulate("8.0.0"), "one simulation at a time");
        }
        Assert.AreEqual(informational.Split('+')[0], MlNetVersion.Loaded, "the simulation ends with its scope");
    }

    [TestMethod]
    public void OnAnUnverifiedReleaseGenerationEncodingEvaluationExportAndFitWorkButTheZipIsRefusedClearly()
    {
        var ml = new MLContext(seed: 1);
        var generation = new GenerationOptions { MaxNewTokens = 12 };
        string expected;
        using (var reference = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf))
            expected = reference.Generate(Prompt, generation);

        using var simulated = MlNetVersion.Simulate(Unverified);
        var pairs = ml.Data.LoadFromEnumerable(ProtagonistPairs.Create().Train.Take(4)
            .Select(p => new { p.Prompt, p.Chosen, p.Rejected }));
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        Assert.AreEqual(expected, model.Generate(Prompt, generation));
        var prompts = ml.Data.LoadFromEnumerable(new[] { new PromptRow { Prompt = Prompt } });
        Assert.AreEqual(model.Generate(Prompt), model.Transform(prompts).GetColumn<string>("Response").Single());
        Assert.IsNotEmpty(model.Encode(Prompt, " Sue.", " Lily.").ChosenIds);
        Assert.AreEqual(4, model.Evaluate(pairs).Pairs);
        string export = TestAssets.NewTempDirectory("orpo-unverified-hf");
        model.SaveHuggingFace(export);
        Assert.IsTrue(File.Exists(Path.Combine(export, "config.json")));
        using var fitted = ml.Transforms.OrpoFineTune(new OrpoOptions
        {
            BaseModelPath = TestAssets.Stories260KHf, Epochs = 1, BatchSize = 4, LearningRate = 1e-3,
        }).Fit(pairs);
        Assert.HasCount(1, fitted.TrainingHistory);

        string zip = Path.Combine(TestAssets.NewTempDirectory("orpo-unverified-zip"), "orpo.zip");
        AssertNamesVersions(Assert.Throws<InvalidOperationException>(() => ml.Model.Save(fitted, prompts.Schema, zip)));
        AssertNamesVersions(Assert.Throws<InvalidOperationException>(() => new MLContext().RegisterOrpo()));
    }

    [TestMethod]
    public void AZipSavedOnAVerifiedReleaseIsRefusedOnLoadByAnUnverifiedOne()
    {
        var ml = new MLContext(seed: 1);
        string zip = Path.Combine(TestAssets.NewTempDirectory("orpo-version-zip"), "orpo.zip");
        var prompts = ml.Data.LoadFromEnumerable(new[] { new PromptRow { Prompt = Prompt } });
        using (var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf))
            ml.Model.Save(model, prompts.Schema, zip);
        using (MlNetVersion.Simulate(Unverified))
        {
            Exception ex = Assert.Throws<Exception>(() => ml.Model.Load(zip, out _)); // this context registered on Save
            AssertNamesVersions(Find<InvalidOperationException>(ex) ?? throw new AssertFailedException(ex.ToString()));
        }
        var loaded = ml.Model.Load(zip, out _);
        (loaded as IDisposable)?.Dispose();
    }

    private static void AssertNamesVersions(InvalidOperationException ex)
    {
        StringAssert.Contains(ex.Message, $"Microsoft.ML {Unverified}");
        foreach (string verified in MlNetVersion.Verified) StringAssert.Contains(ex.Message, verified);
    }

    private static T? Find<T>(Exception? ex) where T : Exception
    {
        for (; ex is not null; ex = ex.InnerException)
            if (ex is T match) return match;
        return null;
    }
}
