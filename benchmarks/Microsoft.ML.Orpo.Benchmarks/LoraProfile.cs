using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Ops;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// Where a LoRA projection's time goes, at a step's shapes (2048 rows; 41.7M: 512 -> 512, 512 -> 1376, 1376 -> 512;
/// the 0.5B shape: 896 -> 896, 896 -> 4864, 4864 -> 896):
/// process CPU milliseconds (median of reps) for the frozen base product and the adapter's pieces, forward and
/// forward + backward (gradients to x, A and B), in float32 with the dropout on.
/// </summary>
internal static class LoraProfile
{
    public static JsonObject Run(int reps, IReadOnlyList<(int In, int Out)> shapes)
    {
        var json = new JsonObject { ["metric"] = "lora_pieces_cpu_ms" };
        double total = 0;
        foreach (var (inFeatures, outFeatures) in shapes)
        {
            using var scope = NewDisposeScope();
            manual_seed(7);
            using var linear = nn.Linear(inFeatures, outFeatures, hasBias: false);
            linear.weight!.requires_grad_(false);
            var dropout = new LoraDropout(0.05);
            var a = new Parameter(randn(16, inFeatures) * 0.02, true);
            var b = new Parameter(randn(outFeatures, 16) * 0.02, true);
            using var adapter = new LoraAdapter(a, b, 2.0, dropout, 0);
            var x = randn(4 * 2, 256, inFeatures).requires_grad_(true);
            var dy = randn(4 * 2, 256, outFeatures);
            string shape = $"{inFeatures}x{outFeatures}";
            using var on = dropout.During(1, 0, 0);
            double Time(Action action)
            {
                action();
                var samples = new List<double>();
                for (int r = 0; r < reps; r++)
                {
                    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                    action();
                    samples.Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds);
                }
                samples.Sort();
                return Math.Round(samples[samples.Count / 2], 2);
            }
            void Backward(Func<Tensor> forward)
            {
                using var inner = NewDisposeScope();
                forward().backward(new List<Tensor> { dy });
                x.grad?.zero_();
                a.grad?.zero_();
                b.grad?.zero_();
            }
            json[$"{shape}.base_fwd"] = Time(() => { using var s = NewDisposeScope(); using var g = no_grad(); Op.Linear(x, linear, null); });
            json[$"{shape}.base_fwdbwd"] = Time(() => Backward(() => Op.Linear(x, linear, null)));
            json[$"{shape}.dropout_fwd"] = Time(() => { using var s = NewDisposeScope(); using var g = no_grad(); dropout.Apply(x, 0); });
            json[$"{shape}.adapter_fwd"] = Time(() => { using var s = NewDisposeScope(); using var g = no_grad(); adapter.Update(x, null); });
            json[$"{shape}.adapter_fwdbwd"] = Time(() => Backward(() => adapter.Update(x, null)));
            json[$"{shape}.with_adapter_fwdbwd"] = Time(() => Backward(() => Op.Linear(x, linear, null, adapter)));
            // The adapter's thin products, libtorch against the packed GEMM: x A^T (N x in x r), u B^T (N x r x out), dy^T u (out x N x r).
            var flat = x.detach().reshape(-1, inFeatures).contiguous();
            var u = randn(flat.shape[0], 16);
            var g = dy.reshape(-1, outFeatures).contiguous();
            var (ad, bd) = (a.detach().contiguous(), b.detach().contiguous());
            // The base's two products alone, through the packed GEMM: y = x W^T and dx = dy W.
            var (flatX, flatDy, w) = (x.detach().reshape(-1, inFeatures).contiguous(), dy.reshape(-1, outFeatures).contiguous(), linear.weight!.detach());
            json[$"{shape}.gemm_fwd"] = Time(() => { using var s = NewDisposeScope(); CpuMatmul.Multiply(flatX, false, w, true); });
            json[$"{shape}.gemm_dx"] = Time(() => { using var s = NewDisposeScope(); CpuMatmul.Multiply(flatDy, false, w, false); });
            // The same with the weight stored in bfloat16 (a BFloat16Base projection: widened as the GEMM packs it).
            var w16 = w.to_type(ScalarType.BFloat16);
            json[$"{shape}.gemm_fwd_bf16w"] = Time(() => { using var s = NewDisposeScope(); CpuMatmul.Multiply(flatX, false, w16, true); });
            json[$"{shape}.gemm_dx_bf16w"] = Time(() => { using var s = NewDisposeScope(); CpuMatmul.Multiply(flatDy, false, w16, false); });
            json[$"{shape}.mm_down_libtorch"] = Time(() => { using var s = NewDisposeScope(); flat.mm(ad.t()); });
            json[$"{shape}.mm_down_packed"] = Time(() => { using var s = NewDisposeScope(); CpuMatmul.Multiply(flat, false, ad, true); });
            json[$"{shape}.mm_up_libtorch"] = Time(() => { using var s = NewDisposeScope(); u.mm(bd.t()); });
            json[$"{shape}.mm_up_packed"] = Time(() => { using var s = NewDisposeScope(); CpuMatmul.Multiply(u, false, bd, true); });
            json[$"{shape}.mm_gradB_libtorch"] = Time(() => { using var s = NewDisposeScope(); g.t().mm(u); });
            json[$"{shape}.mm_gradB_packed"] = Time(() => { using var s = NewDisposeScope(); CpuMatmul.Multiply(g, true, u, false); });
            total += json[$"{shape}.with_adapter_fwdbwd"]!.GetValue<double>() - json[$"{shape}.base_fwdbwd"]!.GetValue<double>();
        }
        json["value"] = Math.Round(total, 2);
        return json;
    }
}
