using TorchSharp;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Tests.Lora;
using Microsoft.ML.Orpo.Tests.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Tests.Modeling;

/// <summary>The decoder's mixed-precision switch: bfloat16 products, float32 weights, gradients and residual stream.</summary>
[TestClass]
public sealed class MixedPrecisionModelTests
{
    [TestMethod]
    public void LinearMultipliesInTheMatmulTypeAndSendsFloat32GradientsToTheWeights()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        using var module = nn.Linear(24, 40, hasBias: true);
        var x = randn(5, 24).requires_grad_(true);

        var y = Op.Linear(x, module, ScalarType.BFloat16);
        Assert.AreEqual(ScalarType.BFloat16, y.dtype);
        var expected = F.linear(x.detach().to_type(ScalarType.BFloat16), module.weight!.detach().to_type(ScalarType.BFloat16),
            module.bias!.detach().to_type(ScalarType.BFloat16));
        Assert.IsTrue(y.detach().eq(expected).all().item<bool>(), "the product of the bfloat16-cast input and weight");
        y.to_type(ScalarType.Float32).sum().backward();
        Assert.AreEqual(ScalarType.Float32, module.weight!.grad!.dtype);
        Assert.AreEqual(ScalarType.Float32, module.bias!.grad!.dtype);
        Assert.AreEqual(ScalarType.Float32, x.grad!.dtype);
        // d sum(x W^T + b) / dW = the column sums of x, here a bfloat16 product: within a few bfloat16 roundings (2^-9 each).
        var exact = x.detach().sum(new long[] { 0 }).unsqueeze(0).expand(40, 24);
        Assert.IsLessThan(1e-2, ((module.weight.grad - exact).abs().max() / exact.abs().max()).ToDouble());

        var plain = Op.Linear(x, module, null);
        Assert.AreEqual(ScalarType.Float32, plain.dtype);
        Assert.IsTrue(plain.detach().eq(module.forward(x).detach()).all().item<bool>(), "no matmul type: the module as it is");
    }

    [TestMethod]
    public void AFrozenProjectionMultipliesInBFloat16AndReturnsTheInputsType()
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        using var module = nn.Linear(24, 40, hasBias: true);
        foreach (var parameter in module.parameters()) parameter.requires_grad_(false);
        var x = randn(5, 24).requires_grad_(true);

        var y = Op.Linear(x, module, ScalarType.BFloat16);
        Assert.AreEqual(ScalarType.Float32, y.dtype, "a LoRA base keeps the activations float32");
        var expected = F.linear(x.detach().to_type(ScalarType.BFloat16), module.weight!.to_type(ScalarType.BFloat16)).to_type(ScalarType.Float32) + module.bias!;
        Assert.IsTrue(y.detach().eq(expected).all().item<bool>(), "the widened bfloat16 product, then the float32 bias");
        y.sum().backward();
        Assert.AreEqual(ScalarType.Float32, x.grad!.dtype);
        var dx = ones(5, 40).to_type(ScalarType.BFloat16).mm(module.weight.to_type(ScalarType.BFloat16)).to_type(ScalarType.Float32);
        Assert.IsTrue(x.grad.eq(dx).all().item<bool>(), "the input gradient multiplied in bfloat16 too");
    }

    [TestMethod]
    public void UnderLoraBFloat16ProductsKeepFloat32ActivationsAndTheKernelsAgreeWithTheReference()
    {
        using var model = TrainingFixtures.LoadModel();
        LoraFixtures.RandomizeB(LoraAdapters.Create(model.Network, LoraFixtures.Config(targets: ["q_proj", "v_proj", "gate_proj", "down_proj"]), seed: 5), seed: 7);
        using var scope = NewDisposeScope();
        var ids = tensor(model.Tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.")
            .Select(i => (long)i).ToArray()).unsqueeze(0).expand(2, -1).contiguous();   // enough rows for the fused LoRA kernel
        Tensor Hidden(ScalarType? type)
        {
            // With gradients, as training runs it (the fused LoRA node), and every linear output float32.
            var hidden = model.Network.HiddenStates(ids, matmulType: type);
            Assert.AreEqual(ScalarType.Float32, hidden.dtype);
            hidden.sum().backward();
            return hidden.detach();
        }
        var fp32 = Hidden(null);
        var kernels = Hidden(ScalarType.BFloat16);
        Tensor reference;
        using (KernelPolicy.ReferenceOnly()) reference = Hidden(ScalarType.BFloat16);
        double fromFloat32 = ((kernels - fp32).norm() / fp32.norm()).ToDouble();
        double fromReference = ((kernels - reference).norm() / fp32.norm()).ToDouble();
        Console.WriteLine($"relative difference: bf16 kernels from fp32 {fromFloat32:E2}, from the bf16 reference path {fromReference:E2}");
        Assert.IsGreaterThan(1e-4, fromFloat32, "bfloat16 products round");
        Assert.IsLessThan(3e-2, fromFloat32);
        Assert.IsLessThan(fromFloat32 / 4, fromReference, "the kernels and the reference compute the same products");
    }

    [TestMethod]
    public void BFloat16HiddenStatesAreFloat32AndCloseToTheFloat32Ones()
    {
        using var model = TrainingFixtures.LoadModel();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = tensor(model.Tokenizer.Encode("Once upon a time, there was a little girl named Lily.").Select(i => (long)i).ToArray()).unsqueeze(0);
        var fp32 = model.Network.HiddenStates(ids);
        var bf16 = model.Network.HiddenStates(ids, matmulType: ScalarType.BFloat16);
        Assert.AreEqual(ScalarType.Float32, bf16.dtype, "the residual stream and final norm stay float32");
        double relative = ((bf16 - fp32).norm() / fp32.norm()).ToDouble();
        Console.WriteLine($"relative difference of the final hidden states: {relative:E2}");
        Assert.IsGreaterThan(0, relative, "bfloat16 products round");
        Assert.IsLessThan(3e-2, relative);
        Assert.IsTrue(model.Network.NamedWeights().All(p => p.Parameter.dtype == ScalarType.Float32), "weights are never cast in place");
    }
}
