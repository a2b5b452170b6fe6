using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// One layer's attention for B packed [prompt | chosen | rejected] rows, forward + backward, interleaved:
/// a dense (B, 1, L, L) mask with one masked kernel call (the earlier shared-prompt path) versus
/// <see cref="SharedPrefixAttention"/> (prompts causal, responses over gathered [prompt | response] keys).
/// </summary>
internal static class SharedAttentionProfile
{
    public static JsonObject Run(int prompt, int response, long b, long h, long d, int rounds)
    {
        using var scope = NewDisposeScope();
        long l = prompt + 2L * response;
        var q = randn(b, h, l, d).requires_grad_(true);
        var k = randn(b, h, l, d).requires_grad_(true);
        var v = randn(b, h, l, d).requires_grad_(true);
        var upstream = randn(b, l, h * d);
        var mask = DenseMask(b, prompt, response);
        using var plan = SharedPrefixAttention.Create((int)l, Enumerable.Range(0, (int)b).Select(_ => (prompt, new[] { response, response })).ToList(), CPU);

        Tensor Dense() => nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask).transpose(1, 2).reshape(b, l, h * d);
        Tensor Planned() => plan.Attend(q, k, v);
        double Time(Func<Tensor> f)
        {
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            for (int i = 0; i < 3; i++)
            {
                using var s = NewDisposeScope();
                (f() * upstream).sum().backward();
            }
            return (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds / 3;
        }
        Time(Dense);
        Time(Planned);
        var dense = new List<double>();
        var planned = new List<double>();
        for (int i = 0; i < rounds; i++) { dense.Add(Time(Dense)); planned.Add(Time(Planned)); }
        dense.Sort();
        planned.Sort();
        return new JsonObject
        {
            ["metric"] = "dense_mask_over_shared_prefix_cpu", ["value"] = Math.Round(dense[rounds / 2] / planned[rounds / 2], 3),
            ["prompt"] = prompt, ["response"] = response,
            ["dense_mask_ms"] = Math.Round(dense[rounds / 2], 2), ["shared_prefix_ms"] = Math.Round(planned[rounds / 2], 2),
        };
    }

    /// <summary>(B, 1, L, L) additive mask: responses see the prompt and their own past; rejected never sees chosen.</summary>
    private static Tensor DenseMask(long b, int prompt, int response)
    {
        using var scope = NewDisposeScope();
        long l = prompt + 2L * response;
        var segment = arange(l).lt(prompt).to_type(ScalarType.Int64).neg().add(2)
            .add(arange(l).ge(prompt + response).to_type(ScalarType.Int64));                 // (L): 1 prompt, 2 chosen, 3 rejected
        var query = segment.unsqueeze(1);
        var key = segment.unsqueeze(0);
        var causal = arange(l).unsqueeze(0).le(arange(l).unsqueeze(1));                    // key <= query
        var allowed = causal.logical_and(key.eq(1).logical_or(key.eq(query)));
        var mask = zeros(l, l).masked_fill(allowed.logical_not(), float.NegativeInfinity);
        return mask.expand(b, 1, l, l).contiguous().MoveToOuterDisposeScope();
    }
}
