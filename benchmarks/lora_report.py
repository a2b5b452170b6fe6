#!/usr/bin/python3
"""LoRA benchmark report (benchmarks/lora.sh): reads each round folder's ours.jsonl and peer.jsonl (run.sh's output),
prints one JSON line per ratio and round, then per ratio the median and spread over rounds and, for the targets,
PASS or FAIL on the median.

Ratios: LoRA / full fine-tuning tokens/s on the same model and settings (wall clock, and by process CPU seconds per step, which moves
less when other processes compete for the cores), LoRA / full peak RSS, ours / the PyTorch peer's LoRA tokens/s.
For ours / the peer, two readings across rounds follow the targets, for a machine where one side's speed moves between
runs of the same code: each side's fastest round against the other's ("best / best"), and our median against the
peer's fastest round ("median / peer's best", the stricter). The targets' PASS or FAIL stays on the in-round medians.
Last, for each round that measured our GEMM peak (`matmul`), the share of that peak 1.5x the peer would take
("feasibility").
Usage: /usr/bin/python3 benchmarks/lora_report.py ROUND_DIR...
"""
import json, os, statistics, sys

MODES = ("fp32base", "bf16base")
# llama41m: stored activations, 4 pairs per pass; llama41m-micro: 1 pair per pass, 4 accumulated; qwen05b-micro: the
# 0.5B shape the same way (its main configuration); qwen05b-micro-bf16: that with bf16 products on both sides (ours:
# Precision = BFloat16, the peer: bf16 autocast); qwen05b: recomputed activations; qwen05b-stored: 4 pairs stored.
MODELS = ("llama41m", "llama41m-micro", "qwen05b-micro", "qwen05b-micro-bf16", "qwen05b", "qwen05b-stored")
SIX_GB_MIB = 6e9 / 2 ** 20  # "fits in 6 GB", read strictly as 6 * 10^9 bytes (5722 MiB)


def read(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {r["scenario"]: r for r in (json.loads(l) for l in f if l.startswith("{"))}


def ratios(ours, peer):
    """(name, value) pairs of one round."""
    out = []
    for model in MODELS:
        full = ours.get("lora.%s.full" % model)
        for mode in MODES:
            lora = ours.get("lora.%s.%s" % (model, mode))
            if lora and full:
                out.append(("%s %s/full tok/s" % (model, mode), lora["value"] / full["value"]))
                if lora.get("cpu_step_s") and full.get("cpu_step_s"):
                    out.append(("%s %s/full tok/s by CPU time" % (model, mode), full["cpu_step_s"] / lora["cpu_step_s"]))
                out.append(("%s %s/full peak RSS" % (model, mode), lora["peak_rss_mib"] / full["peak_rss_mib"]))
            theirs = peer.get("lora.%s.%s" % (model, mode))
            if lora and theirs:
                out.append(("%s %s ours/peer tok/s" % (model, mode), lora["value"] / theirs["value"]))
                if lora.get("cpu_step_s") and theirs.get("cpu_step_s"):
                    out.append(("%s %s ours/peer tok/s by CPU time" % (model, mode), theirs["cpu_step_s"] / lora["cpu_step_s"]))
    for model in ("qwen05b-micro", "qwen05b"):
        bf16 = ours.get("lora.%s.bf16base" % model)
        if bf16:
            out.append(("%s bf16base peak RSS MiB" % model, bf16["peak_rss_mib"]))
    return out


TARGETS = [  # (ratio name prefix, comparison, bound, label)
    ("llama41m fp32base/full tok/s", ">=", 1.3, "LoRA >= 1.3x full fine-tuning tok/s (41.7M, fp32 base)"),
    ("llama41m bf16base/full tok/s", ">=", 1.3, "LoRA >= 1.3x full fine-tuning tok/s (41.7M, bf16 base)"),
    ("qwen05b-micro fp32base/full tok/s", ">=", 1.3, "LoRA >= 1.3x full fine-tuning tok/s (0.5B shape, 1 pair per pass, fp32 base)"),
    ("qwen05b-micro bf16base/full tok/s", ">=", 1.3, "LoRA >= 1.3x full fine-tuning tok/s (0.5B shape, 1 pair per pass, bf16 base)"),
    ("qwen05b-micro fp32base/full peak RSS", "<=", 0.45, "LoRA peak RSS <= 0.45x full fine-tuning (0.5B shape, 1 pair per pass, fp32 base)"),
    ("qwen05b-micro bf16base/full peak RSS", "<=", 0.45, "LoRA peak RSS <= 0.45x full fine-tuning (0.5B shape, 1 pair per pass, bf16 base)"),
    ("qwen05b-micro bf16base peak RSS MiB", "<=", SIX_GB_MIB, "0.5B LoRA step 4x256, 1 pair per pass, bf16 base, fits in 6 GB (peak RSS MiB)"),
    ("qwen05b-micro fp32base ours/peer tok/s", ">=", 1.5, "LoRA >= 1.5x the peer's LoRA tok/s (0.5B shape, 1 pair per pass, fp32 base)"),
    ("qwen05b fp32base/full tok/s", ">=", 1.3, "LoRA >= 1.3x full fine-tuning tok/s (0.5B shape, recomputed, fp32 base)"),
    ("qwen05b bf16base/full tok/s", ">=", 1.3, "LoRA >= 1.3x full fine-tuning tok/s (0.5B shape, recomputed, bf16 base)"),
    ("qwen05b-stored fp32base/full tok/s", ">=", 1.3, "LoRA >= 1.3x full fine-tuning tok/s (0.5B shape, stored activations, fp32 base)"),
    ("qwen05b fp32base/full peak RSS", "<=", 0.45, "LoRA peak RSS <= 0.45x full fine-tuning (0.5B shape, recomputed, fp32 base)"),
    ("qwen05b bf16base/full peak RSS", "<=", 0.45, "LoRA peak RSS <= 0.45x full fine-tuning (0.5B shape, recomputed, bf16 base)"),
    ("qwen05b bf16base peak RSS MiB", "<=", SIX_GB_MIB, "0.5B LoRA step 4x256, recomputed, bf16 base, fits in 6 GB (peak RSS MiB)"),
    ("llama41m fp32base ours/peer tok/s", ">=", 1.5, "LoRA >= 1.5x the peer's LoRA tok/s (41.7M, fp32 base)"),
    ("llama41m bf16base ours/peer tok/s", ">=", 1.5, "LoRA >= 1.5x the peer's LoRA tok/s (41.7M, bf16 base)"),
    ("qwen05b fp32base ours/peer tok/s", ">=", 1.5, "LoRA >= 1.5x the peer's LoRA tok/s (0.5B shape, recomputed, fp32 base)"),
]


def across_rounds(rounds):
    """(label, ours, peer, ratio, rounds) for each LoRA scenario both sides ran: best / best, and our median / the peer's best."""
    out = []
    for model in MODELS:
        for mode in MODES:
            key = "lora.%s.%s" % (model, mode)
            ours = [o[key]["value"] for o, p in rounds if key in o and key in p]
            peer = [p[key]["value"] for o, p in rounds if key in o and key in p]
            if not ours:
                continue
            out.append(("%s %s ours/peer tok/s, best / best" % (model, mode), max(ours), max(peer), max(ours) / max(peer), len(ours)))
            out.append(("%s %s ours/peer tok/s, median / peer's best" % (model, mode), statistics.median(ours), max(peer),
                        statistics.median(ours) / max(peer), len(ours)))
    return out


def feasibility(folder, ours, peer):
    """Per LoRA fp32-base scenario both sides ran in a round that also measured our GEMM peak (lora.sh's first round
    runs `matmul`): the model GFLOP/s 1.5x the peer's tokens/s takes, as a share of the fastest product of the
    scenario's precision this machine ran for us in that round, beside the share our step reached. A share near 1
    means every product of the step would have to run at the GEMM's peak and nothing else would take any time."""
    matmul = ours.get("matmul", {})
    if not matmul.get("value"):
        return []
    out = []
    for model in MODELS:
        key = "lora.%s.fp32base" % model
        if key not in ours or key not in peer:
            continue
        peak = matmul.get("bf16_value") if ours[key].get("precision") == "bf16" else matmul["value"]  # libtorch's bf16 products
        flops_per_token = ours[key]["model_gflops"] / ours[key]["value"]
        needed = 1.5 * peer[key]["value"] * flops_per_token
        out.append(dict(feasibility="%s fp32base: 1.5x the peer's LoRA tok/s" % model, round=os.path.basename(folder.rstrip("/")),
                        gemm_peak_gflops=round(peak, 1), ours_model_gflops=ours[key]["model_gflops"],
                        ours_share_of_peak=round(ours[key]["model_gflops"] / peak, 3),
                        peer_model_gflops=round(peer[key]["value"] * flops_per_token, 1),
                        needed_model_gflops=round(needed, 1), needed_share_of_peak=round(needed / peak, 3)))
    return out


def main():
    per_name = {}
    rounds = []
    for folder in sys.argv[1:]:
        ours, peer = read(os.path.join(folder, "ours.jsonl")), read(os.path.join(folder, "peer.jsonl"))
        rounds.append((ours, peer))
        for name, value in ratios(ours, peer):
            per_name.setdefault(name, []).append(value)
            print(json.dumps({"ratio": name, "round": os.path.basename(folder.rstrip("/")), "value": round(value, 3)}))
    summary = {}
    for name, values in per_name.items():
        summary[name] = dict(median=round(statistics.median(values), 3), min=round(min(values), 3), max=round(max(values), 3), rounds=len(values))
        print(json.dumps(dict(ratio=name, **summary[name])))
    print()
    for name, op, bound, label in TARGETS:
        for suffix in ("", " by CPU time"):
            s = summary.get(name + suffix)
            if s is None:
                continue
            ok = s["median"] >= bound if op == ">=" else s["median"] <= bound
            print(json.dumps({"target": label + suffix, "bound": "%s %.3g" % (op, bound), "median": s["median"],
                              "min": s["min"], "max": s["max"], "rounds": s["rounds"], "result": "PASS" if ok else "FAIL"}))
    print()
    for label, ours, peer, ratio, count in across_rounds(rounds):
        print(json.dumps({"across_rounds": label, "ours_tok_s": round(ours, 1), "peer_tok_s": round(peer, 1), "value": round(ratio, 3),
                          "rounds": count}))
    print()
    for folder, (ours, peer) in zip(sys.argv[1:], rounds):
        for line in feasibility(folder, ours, peer):
            print(json.dumps(line))


if __name__ == "__main__":
    main()
