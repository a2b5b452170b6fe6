using Microsoft.ML.Orpo.Tests.Infrastructure;
using static Microsoft.ML.Orpo.Tests.Lora.LoraPipelineFixtures;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>Invalid <see cref="LoraOptions"/> and options that contradict <see cref="OrpoOptions.AdapterPath"/> fail before any training step.</summary>
[TestClass]
public sealed class LoraOptionsValidationTests
{
    private sealed class StepCounter : IProgress<OrpoStepMetrics>
    {
        public int Steps { get; private set; }
        public void Report(OrpoStepMetrics value) => Steps++;
    }

    [TestMethod]
    [DataRow(0, 8.0, 0.05, "Rank")]
    [DataRow(-1, 8.0, 0.05, "Rank")]
    [DataRow(4, 0.0, 0.05, "Alpha")]
    [DataRow(4, -2.0, 0.05, "Alpha")]
    [DataRow(4, double.NaN, 0.05, "Alpha")]
    [DataRow(4, 8.0, 1.0, "Dropout")]
    [DataRow(4, 8.0, -0.1, "Dropout")]
    public void AnOutOfRangeLoraOptionFailsWhenTheEstimatorIsMadeNamingIt(int rank, double alpha, double dropout, string option)
    {
        var ml = new MLContext(seed: 1);
        var options = Options(new LoraOptions { Rank = rank, Alpha = alpha, Dropout = dropout });
        var error = Assert.Throws<ArgumentException>(() => ml.Transforms.OrpoFineTune(options));
        Assert.AreEqual(option, error.ParamName);
        StringAssert.Contains(error.Message, "OrpoOptions.Lora." + option);
        // The same check guards the other entry point.
        StringAssert.Contains(Assert.Throws<ArgumentException>(() => OrpoTransformer.FromPretrained(ml, options)).Message, "OrpoOptions.Lora." + option);
    }

    [TestMethod]
    public void EmptyOrUnknownTargetModulesFailNamingTheOptionBeforeAnyStep()
    {
        var ml = new MLContext(seed: 1);
        var empty = Options(new LoraOptions { Rank = Rank, TargetModules = new List<string>() });
        StringAssert.Contains(Assert.Throws<ArgumentException>(() => ml.Transforms.OrpoFineTune(empty)).Message, "OrpoOptions.Lora.TargetModules");

        // Only the model knows its projections: the name is checked when Fit loads it, before reading data or training.
        var counter = new StepCounter();
        var unknown = Options(new LoraOptions { Rank = Rank, TargetModules = ["q_proj", "foo_proj"] });
        unknown.Progress = counter;
        var error = Assert.Throws<ArgumentException>(() => ml.Transforms.OrpoFineTune(unknown).Fit(Pairs(ml)));
        StringAssert.Contains(error.Message, "OrpoOptions.Lora.TargetModules");
        StringAssert.Contains(error.Message, "'foo_proj'");
        StringAssert.Contains(error.Message, "q_proj", "the message lists the projections there are");
        Assert.AreEqual(0, counter.Steps);
    }

    [TestMethod]
    public void LoraOptionsThatDisagreeWithTheAdapterPathAreRefused()
    {
        string adapter = SavedFittedAdapter();
        var ml = new MLContext(seed: 1);
        // At Fit, before any step: the rank differs.
        var options = Options(new LoraOptions { Rank = 8, Alpha = Alpha });
        options.AdapterPath = adapter;
        var counter = new StepCounter();
        options.Progress = counter;
        var atFit = Assert.Throws<ArgumentException>(() => ml.Transforms.OrpoFineTune(options).Fit(Pairs(ml)));
        Assert.AreEqual("Lora", atFit.ParamName);
        StringAssert.Contains(atFit.Message, "OrpoOptions.AdapterPath");
        StringAssert.Contains(atFit.Message, "rank 8");
        StringAssert.Contains(atFit.Message, $"rank {Rank}");
        Assert.AreEqual(0, counter.Steps);

        // FromPretrained(options) resolves the adapter the same way: alpha, the target modules or the rsLoRA factor differ.
        foreach (var lora in new[] { new LoraOptions { Rank = Rank, Alpha = 16 }, new LoraOptions { Rank = Rank, Alpha = Alpha, TargetModules = ["q_proj", "v_proj"] },
            new LoraOptions { Rank = Rank, Alpha = Alpha, UseRsLora = true } })
        {
            var other = Options(lora);
            other.AdapterPath = adapter;
            var error = Assert.Throws<ArgumentException>(() => OrpoTransformer.FromPretrained(ml, other));
            StringAssert.Contains(error.Message, "disagrees");
            StringAssert.Contains(error.Message, "alpha 8");
        }

        // Target modules in another order and another dropout agree: the adapter is the same.
        var agreeing = Options(new LoraOptions { Rank = Rank, Alpha = Alpha, Dropout = 0, TargetModules = LoraOptions.AllLinear.Reverse().ToList() });
        agreeing.AdapterPath = adapter;
        using var model = OrpoTransformer.FromPretrained(ml, agreeing);
        Assert.IsTrue(model.HasAdapter);
    }

    [TestMethod]
    public void AnEmptyAdapterPathIsRefusedEagerly()
    {
        var options = Options();
        options.AdapterPath = " ";
        var error = Assert.Throws<ArgumentException>(() => new MLContext(seed: 1).Transforms.OrpoFineTune(options));
        Assert.AreEqual("AdapterPath", error.ParamName);
    }
}
