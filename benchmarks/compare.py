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
    if name == "matmul" or name not in peer:
        continue
    p = peer[name]
    mfu = lambda r, peak: r.get("model_gflops", float("nan")) / peak
    print("%-40s %12.1f %12.1f %7.2f %7.1f%% %7.1f%% %9.0f %9.0f" % (
        name, o["value"], p["value"], o["value"] / p["value"], 100 * mfu(o, peak_o), 100 * mfu(p, peak_p),
        o.get("peak_rss_mib", float("nan")), p.get("peak_rss_mib", float("nan"))))
