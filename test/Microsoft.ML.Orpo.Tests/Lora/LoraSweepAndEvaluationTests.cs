using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Sweeping;
using static Microsoft.ML.Orpo.Tests.Lora.LoraPipelineFixtures;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>A lambda sweep with <see cref="OrpoOptions.Lora"/>, and evaluation of an adapter model against its merged model.</summary>
[TestClass]
public sealed class LoraSweepAndEvaluationTests
{
    [TestMethod]
    public async Task EverySweepTrialTrainsFreshAdaptersAndTheBestModelHasOne()
    {
        var ml = new MLContext(seed: 1);
        var options = Options(RankFour(dropout: 0));
        var experiment = SweepFixtures.Experiment(ml, trainPairs: 4, epochs: 1, batchSize: 4)
            .SetBaseOptions(options)
            .SetSearchSpace(new OrpoSearchSpace { Lambda = SweepRange.Choice(0.1, 0.5) })
            .SetMaxTrials(2);
        var result = await experiment.RunAsync();
        using var best = result.BestModel;
        Assert.HasCount(2, result.Trials);
        Assert.IsTrue(result.Trials.All(t => t.Status == OrpoTrialStatus.Completed), string.Join("; ", result.Trials.Select(t => t.Error)));
        Assert.IsTrue(best.HasAdapter);

        // A fresh adapter (B = 0) is exactly the base model, so each trial's one step starts from the base model's NLL:
        // a trial that continued the previous trial's adapter would not.
        var baseOptions = Options();
        baseOptions.Lora = null;
        using var plain = OrpoTransformer.FromPretrained(ml, baseOptions);
        double baseNll = plain.Evaluate(Pairs(ml, 4)).NllLoss;
        foreach (var trial in result.Trials)
        {
            Assert.HasCount(1, trial.History);
            Assert.AreEqual(baseNll, trial.History[0].NllLoss, 1e-5 * baseNll, $"trial {trial.Id} (lambda {trial.Lambda})");
        }
        Assert.AreNotEqual(result.Trials[0].History[0].Loss, result.Trials[1].History[0].Loss, "the trials ran with their own lambdas");
        string adapter = TestAssets.NewTempDirectory("orpo-adapter");
        best.SaveAdapter(adapter);
        CollectionAssert.AreEqual(ExpectedAdapterKeys().Keys.ToArray(), Header(Path.Combine(adapter, "adapter_model.safetensors")).Keys.ToArray());
    }

    [TestMethod]
    public void EvaluateAndDiversityOfAnAdapterModelEqualThoseOfItsMergedModel()
    {
        using var merged = Fitted.MergeAdapter();
        var heldOut = HeldOut(FittedContext);
        var withAdapter = Fitted.Evaluate(heldOut);
        var withMerged = merged.Evaluate(heldOut);
        Assert.AreEqual(withMerged.Pairs, withAdapter.Pairs);
        foreach (var (name, a, m) in new[]
                 {
                     ("Loss", withAdapter.Loss, withMerged.Loss), ("NllLoss", withAdapter.NllLoss, withMerged.NllLoss),
                     ("OddsRatioLoss", withAdapter.OddsRatioLoss, withMerged.OddsRatioLoss), ("LogOddsRatio", withAdapter.LogOddsRatio, withMerged.LogOddsRatio),
                     ("RewardsMargin", withAdapter.RewardsMargin, withMerged.RewardsMargin), ("RewardsAccuracy", withAdapter.RewardsAccuracy, withMerged.RewardsAccuracy),
                     ("ChosenLogProbability", withAdapter.ChosenLogProbability, withMerged.ChosenLogProbability),
                     ("RejectedLogProbability", withAdapter.RejectedLogProbability, withMerged.RejectedLogProbability),
                     ("ChosenPerplexity", withAdapter.ChosenPerplexity, withMerged.ChosenPerplexity),
                 })
            Assert.AreEqual(m, a, 1e-5 * Math.Max(1, Math.Abs(m)), name);

        var diversity = new OrpoDiversityOptions { SamplesPerPrompt = 2 };
        diversity.Generation.MaxNewTokens = 8;
        diversity.Generation.Seed = 7;
        string[] prompts = Prompts[..2];
        var adapterDiversity = Fitted.EvaluateDiversity(prompts, diversity);
        var mergedDiversity = merged.EvaluateDiversity(prompts, diversity);
        Assert.AreEqual(mergedDiversity.PerInputDiversity, adapterDiversity.PerInputDiversity, 1e-5, "PID");
        Assert.AreEqual(mergedDiversity.AcrossInputDiversity, adapterDiversity.AcrossInputDiversity, 1e-5, "AID");
    }
}
