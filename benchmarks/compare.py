#!/usr/bin/python3
"""Prints our/their ratios per scenario from two JSON-lines result files (ours first), with MFU against each side's
own matmul peak measured in the same run: the fp32 peak for fp32 scenarios, the bf16 peak for bf16 ones.
An optional third file is the default-configured peer (auto-detected BLAS kernel, glibc defaults): its tokens/s and
our ratio to it are listed beside, for reference; the ratio that counts is against the tuned peer.
An optional fourth file holds the llama.cpp generation peer's lines (benchmarks/llamacpp): ours / llama.cpp per
generation scenario, end to end (prefill + new tokens, the scenarios' value) and decode only, with the greedy check."""
import json, os, sys


def read(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {r["scenario"]: r for r in (json.loads(l) for l in f if l.startswith("{"))}


ours, peer = read(sys.argv[1]), read(sys.argv[2])
default = read(sys.argv[3]) if len(sys.argv) > 3 else {}
nan = float("nan")
# Which BLAS kernel and allocator settings each peer ran with (every peer result line names them).
for label, side in (("peer", peer), ("default peer", default)):
    if side:
        print("%s: %s; malloc: %s" % (label, ", ".join(sorted({r.get("blas", "?") for r in side.values()})),
                                      ", ".join(sorted({r.get("malloc", "?") for r in side.values()}))))
peak_o = ours.get("matmul", {}).get("value", nan)
peak_p = peer.get("matmul", {}).get("value", nan)
bf16_o = ours.get("matmul", {}).get("bf16_value", nan)
bf16_p = peer.get("matmul", {}).get("bf16_value", nan)
print("matmul GFLOP/s: ours %.1f  peer %.1f  ratio %.2f" % (peak_o, peak_p, peak_o / peak_p))
print("bf16 matmul GFLOP/s: ours %.1f  peer %.1f  ratio %.2f" % (bf16_o, bf16_p, bf16_o / bf16_p))


def peak(r, side):
    """The MFU denominator of a result: its side's bf16 peak for bf16 scenarios, else the fp32 peak."""
    bf16 = r.get("precision") == "bf16"
    return (bf16_o if bf16 else peak_o) if side == "ours" else (bf16_p if bf16 else peak_p)


print("%-40s %12s %12s %7s %8s %8s %9s %9s%s" % ("scenario", "ours", "peer", "ratio", "MFU us", "MFU peer", "RSS us", "RSS peer",
                                                "  %12s %7s" % ("default peer", "ratio") if default else ""))
for name, o in ours.items():
    if name not in peer or name == "matmul":
        if name != "matmul":
            print("%-40s %12.1f %12s %7s %7.1f%% %8s %9.0f" % (name, o["value"], "-", "-",
                  100 * o.get("model_gflops", nan) / peak(o, "ours"), "-", o.get("peak_rss_mib", nan)))
        continue
    p = peer[name]
    mfu = lambda r, side: r.get("model_gflops", nan) / peak(r, side)
    d = default.get(name, {}).get("value", nan)
    print("%-40s %12.1f %12.1f %7.2f %7.1f%% %7.1f%% %9.0f %9.0f%s" % (
        name, o["value"], p["value"], o["value"] / p["value"], 100 * mfu(o, "ours"), 100 * mfu(p, "peer"),
        o.get("peak_rss_mib", float("nan")), p.get("peak_rss_mib", float("nan")),
        "  %12.1f %7.2f" % (d, o["value"] / d) if default else ""))


def ratio(a, b, field="value", side=None):
    side = ours if side is None else side
    if a in side and b in side:
        return side[a][field] / side[b][field]
    return nan


print("\nwithin ours (neighbouring runs):")
print("  chunked / plain peak RSS (41.7M, 64+192): %.3f" % ratio("train.llama41m.concat.64+192", "train.llama41m.plain.64+192", "peak_rss_mib"))
print("  chunked / plain tok/s    (41.7M, 64+192): %.3f" % ratio("train.llama41m.concat.64+192", "train.llama41m.plain.64+192"))
for shape in ("170+86", "128+128", "64+192"):
    print("  shared / concat tok/s    (41.7M, %s): %.3f" % (shape, ratio("train.llama41m.shared." + shape, "train.llama41m.concat." + shape)))
for model in ("stories260K", "llama41m"):
    print("  bf16 / fp32 tok/s        (%s, 64+192): %.3f" % (model, ratio("train.%s.bf16.64+192" % model, "train.%s.concat.64+192" % model)))
    print("  bf16 / fp32 peak RSS     (%s, 64+192): %.3f" % (model, ratio("train.%s.bf16.64+192" % model, "train.%s.concat.64+192" % model, "peak_rss_mib")))
for model, b in (("stories260K", 1), ("stories260K", 8), ("llama41m", 1)):
    print("  KV cache / recompute     (%s, batch %d): %.2f" % (model, b, ratio("gen.%s.cache.b%d" % (model, b), "gen.%s.recompute.b%d" % (model, b))))

print("\nwithin the peer (neighbouring runs):")
for model in ("stories260K", "llama41m"):
    print("  bf16 / fp32 tok/s        (%s, 64+192): %.3f" % (model, ratio("train.%s.bf16.64+192" % model, "train.%s.concat.64+192" % model, side=peer)))

llamacpp = read(sys.argv[4]) if len(sys.argv) > 4 else {}
if llamacpp:
    print("\nours / llama.cpp (generation, batch 1, greedy, same prompt ids and threads; %s, KV cache %s):" % (
        ", ".join(sorted({r.get("engine", "?") for r in llamacpp.values()})),
        ", ".join(sorted({r.get("kv_cache", "?") for r in llamacpp.values()}))))
    print("  %-28s %8s %10s %10s %7s %10s %10s %7s %9s %9s  %s" % ("scenario", "threads", "ours tok/s", "l.cpp", "ratio",
          "ours dec", "l.cpp dec", "ratio", "ours pre", "l.cpp pre", "greedy check"))
    for name, l in llamacpp.items():
        o = ours.get(name)
        if o is None:
            continue
        same = o.get("first_ids") == l.get("first_ids")
        check = "first 8 ids %s; llama.cpp equals our full greedy run for %d/%d tokens" % (
            "equal" if same else "DIFFER (%s vs %s)" % (o.get("first_ids"), l.get("first_ids")),
            l.get("same_prefix_as_ours", -1), l.get("compared", -1))
        threads = "%s/%s" % (o.get("threads", "?"), l.get("threads", "?"))
        print("  %-28s %8s %10.1f %10.1f %7.2f %10.1f %10.1f %7.2f %8.1fms %8.1fms  %s" % (
            name, threads, o["value"], l["value"], o["value"] / l["value"],
            o.get("decode_tokens_per_s") or nan, l["decode_tokens_per_s"], (o.get("decode_tokens_per_s") or nan) / l["decode_tokens_per_s"],
            1e3 * (o.get("prefill_s") or nan), 1e3 * l["prefill_s"], check))
