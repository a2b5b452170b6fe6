#!/usr/bin/python3
"""Prints our/their ratios per scenario from two JSON-lines result files (ours first), with MFU against each side's
own matmul peak measured in the same run."""
import json, sys


def read(path):
    with open(path) as f:
        return {r["scenario"]: r for r in (json.loads(l) for l in f if l.startswith("{"))}


ours, peer = read(sys.argv[1]), read(sys.argv[2])
peak_o = ours.get("matmul", {}).get("value", float("nan"))
peak_p = peer.get("matmul", {}).get("value", float("nan"))
print("matmul GFLOP/s: ours %.1f  peer %.1f  ratio %.2f" % (peak_o, peak_p, peak_o / peak_p))
print("%-40s %12s %12s %7s %8s %8s %9s %9s" % ("scenario", "ours", "peer", "ratio", "MFU us", "MFU peer", "RSS us", "RSS peer"))
for name, o in ours.items():
    if name not in peer or name == "matmul":
        if name != "matmul":
            print("%-40s %12.1f %12s %7s %7.1f%% %8s %9.0f" % (name, o["value"], "-", "-",
                  100 * o.get("model_gflops", float("nan")) / peak_o, "-", o.get("peak_rss_mib", float("nan"))))
        continue
    p = peer[name]
    mfu = lambda r, peak: r.get("model_gflops", float("nan")) / peak
    print("%-40s %12.1f %12.1f %7.2f %7.1f%% %7.1f%% %9.0f %9.0f" % (
        name, o["value"], p["value"], o["value"] / p["value"], 100 * mfu(o, peak_o), 100 * mfu(p, peak_p),
        o.get("peak_rss_mib", float("nan")), p.get("peak_rss_mib", float("nan"))))


def ratio(a, b, field="value"):
    if a in ours and b in ours:
        return ours[a][field] / ours[b][field]
    return float("nan")


print("\nwithin ours (neighbouring runs):")
print("  chunked / plain peak RSS (41.7M, 64+192): %.3f" % ratio("train.llama41m.concat.64+192", "train.llama41m.plain.64+192", "peak_rss_mib"))
print("  chunked / plain tok/s    (41.7M, 64+192): %.3f" % ratio("train.llama41m.concat.64+192", "train.llama41m.plain.64+192"))
for shape in ("170+86", "128+128", "64+192"):
    print("  shared / concat tok/s    (41.7M, %s): %.3f" % (shape, ratio("train.llama41m.shared." + shape, "train.llama41m.concat." + shape)))
for model, b in (("stories260K", 1), ("stories260K", 8), ("llama41m", 1)):
    print("  KV cache / recompute     (%s, batch %d): %.2f" % (model, b, ratio("gen.%s.cache.b%d" % (model, b), "gen.%s.recompute.b%d" % (model, b))))
