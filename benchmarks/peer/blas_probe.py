#!/usr/bin/python3
"""Picks the fastest correct OpenBLAS kernel (OPENBLAS_CORETYPE) for the PyTorch peer on this CPU.

Debian's OpenBLAS 0.3.21 auto-detects a slow kernel on some CPUs (an Intel Xeon with AVX-512 got 22-32 GFLOP/s
against 137 with a forced core type), and the peer we compare against should be the strongest one. OpenBLAS reads
OPENBLAS_CORETYPE once, when the library loads, so every candidate runs in a child process of its own; a candidate
that crashes (SIGILL on an instruction this CPU lacks) is reported as unusable, not fatal.

Per candidate the child checks float32 products against references computed here, in the parent, not by the
candidate's kernel: integer-valued inputs against an exact int64 product (no BLAS involved; every partial sum is an
integer below 2^24, so a correct float32 kernel is exact in any summation order), and normal inputs against a
float64 product (relative Frobenius error, float32 rounding is ~1e-7). Shapes include odd sizes, the transposed
layouts training uses (x @ W.t() forward, dY.t() @ x weight gradients) and a batched product (attention). Then it
measures GFLOP/s on the 41.7M training step's shapes at the run's thread count.

Usage: /usr/bin/python3 blas_probe.py [--threads N] [--cache FILE] [--reprobe]
Prints a table on stderr and one JSON line on stdout: every candidate's GFLOP/s and correctness, "chosen" (the value
for OPENBLAS_CORETYPE, "auto" meaning unset) and "blas" (the kernel's name, e.g. "OpenBLAS 0.3.21 SkylakeX").
With --cache, a result for the same machine, thread count and libraries is reused instead of probing again.
"""
import argparse, ctypes, hashlib, json, os, platform, subprocess, sys, tempfile, time

# Core types of OpenBLAS 0.3.21's x86-64 DYNAMIC_ARCH build worth trying on a current CPU, with the /proc/cpuinfo
# flags their kernels execute. "auto" leaves OPENBLAS_CORETYPE unset (the library's own CPU detection).
AVX512 = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
CANDIDATES = [
    ("auto", ()),
    ("Haswell", ("avx2", "fma")),
    ("Zen", ("avx2", "fma")),
    ("SkylakeX", AVX512),
    ("Cooperlake", AVX512 + ("avx512_bf16",)),
    # Newer OpenBLAS releases give SapphireRapids AMX bf16 kernels; never try it where AMX is missing.
    ("SapphireRapids", AVX512 + ("avx512_bf16", "amx_tile", "amx_bf16")),
    ("Sandybridge", ("avx",)),
    # AMD's Bulldozer-family kernels are written with FMA4 (vfmaddps, 4 operands), which Zen CPUs do not have.
    ("Bulldozer", ("avx", "fma4")),
    ("Piledriver", ("avx", "fma4")),
    ("Steamroller", ("avx", "fma4")),
    ("Excavator", ("avx", "fma4")),
]
# SSE-only kernels (Nehalem, Core2, Penryn, Dunnington, Atom, Prescott, Opteron, Barcelona, Bobcat, Nano, ...) are
# not probed where AVX2 exists: at a quarter of the vector width they cannot win.
PRE_AVX = "Nehalem, Core2, Penryn, Dunnington, Atom, Prescott, Opteron, Barcelona, Bobcat, Nano"

# Correctness: (batch, M, K, N, layout) with layout "nn" a @ b, "nt" a @ b.t() (Linear forward), "tn" a.t() @ b
# (weight gradient), "tt" a.t() @ b.t(); batch > 0 is a bmm (attention scores).
CHECKS = [(0, 1, 1, 1, "nn"), (0, 7, 13, 5, "nt"), (0, 33, 65, 17, "tn"), (0, 31, 17, 63, "tt"),
          (0, 257, 513, 129, "nn"), (0, 255, 511, 1377, "nt"), (0, 1379, 1031, 517, "tn"), (0, 2040, 512, 1376, "nt"),
          (8, 255, 64, 255, "nt"), (8, 255, 255, 64, "nn")]
INT_BOUND, FLOAT_BOUND = 1e-7, 1e-5
# Speed: the 41.7M training step at 64+192 tokens, 4 pairs (2040 rows; 2048 here): Linear forward (x @ W.t()), input
# gradient (dY @ W), weight gradient (dY.t() @ x) of the MLP, attention projections and an LM-head slice of 4096 words.
SPEED = [(2048, 512, 1376, "nt"), (2048, 1376, 512, "nn"), (1376, 2048, 512, "tn"), (2048, 512, 512, "nt"),
         (512, 2048, 512, "tn"), (2048, 512, 4096, "nt"), (4096, 2048, 512, "tn")]


def cpu_info():
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first processor's block is enough
    model = "%s (family %s, model %s)" % (info.get("model name", platform.processor()), info.get("cpu family", "?"), info.get("model", "?"))
    return model, set(info.get("flags", "").split())


def operands(torch, a, b, layout):
    """Stored so that the product in `layout` has the requested shape: 't' operands are stored transposed."""
    if layout[0] == "t":
        a = a.transpose(-1, -2).contiguous()
    if layout[1] == "t":
        b = b.transpose(-1, -2).contiguous()
    return a, b


def product(a, b, layout):
    if layout[0] == "t":
        a = a.transpose(-1, -2)
    if layout[1] == "t":
        b = b.transpose(-1, -2)
    return a @ b


def make_checks(torch, path):
    """Inputs and references, computed in this (parent) process, for the children to compare against."""
    g = torch.Generator().manual_seed(17)
    cases = []
    for batch, m, k, n, layout in CHECKS:
        shape = lambda r, c: (batch, r, c) if batch else (r, c)
        ia = torch.randint(-3, 4, shape(m, k), generator=g)
        ib = torch.randint(-3, 4, shape(k, n), generator=g)
        fa = torch.randn(shape(m, k), generator=g, dtype=torch.float64)
        fb = torch.randn(shape(k, n), generator=g, dtype=torch.float64)
        cases.append(dict(name="%s%dx%dx%d%s" % (layout, m, k, n, "x%d" % batch if batch else ""), layout=layout,
                          ints=operands(torch, ia.float(), ib.float(), layout), int_ref=ia @ ib,
                          floats=operands(torch, fa.float(), fb.float(), layout), float_ref=fa.float().double() @ fb.float().double()))
    torch.save(cases, path)


def openblas():
    """The OpenBLAS that torch loaded (Debian's libblas.so.3 alternative), as (library, version, core name)."""
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if "openblas" in os.path.basename(path).lower() and ".so" in path:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = lib.openblas_get_config.restype = ctypes.c_char_p
            config = lib.openblas_get_config().decode().split()
            return path, config[1] if len(config) > 1 else "?", lib.openblas_get_corename().decode()
    return None, "?", "not OpenBLAS"


def child(threads, checks_path):
    """Runs in the candidate's process (OPENBLAS_CORETYPE already set): correctness (unless checks_path is "-"),
    then GFLOP/s."""
    import torch
    torch.set_num_threads(threads)
    path, version, core = openblas()
    worst_int, worst_float, failed = 0.0, 0.0, []
    for case in torch.load(checks_path) if checks_path != "-" else []:
        c = product(*case["ints"], case["layout"]).double()
        err_int = ((c - case["int_ref"].double()).abs().max() / case["int_ref"].abs().max().clamp_min(1)).item()
        c = product(*case["floats"], case["layout"]).double()
        err_float = ((c - case["float_ref"]).norm() / case["float_ref"].norm()).item()
        worst_int, worst_float = max(worst_int, err_int), max(worst_float, err_float)
        if not (err_int <= INT_BOUND and err_float <= FLOAT_BOUND):  # NaN fails too
            failed.append("%s int %.2g float %.2g" % (case["name"], err_int, err_float))
    # A bf16 product must not crash either (the peer's bf16 scenarios); its values are bf16-rounded, so only coarse.
    a, b = torch.randn(96, 80), torch.randn(80, 72)
    err_bf16 = ((a.bfloat16() @ b.bfloat16()).double() - a.double() @ b.double()).norm() / (a.double() @ b.double()).norm()
    if not err_bf16 <= 3e-2:
        failed.append("bf16 %.2g" % err_bf16)
    flops = seconds = 0.0
    detail = {}
    for m, k, n, layout in SPEED:
        a, b = operands(torch, torch.randn(m, k), torch.randn(k, n), layout)
        product(a, b, layout)  # warm-up (thread start, first-touch of the packing buffers)
        # The fastest of several products: an interruption by another process only ever adds time.
        best, start = float("inf"), time.perf_counter()
        while best == float("inf") or time.perf_counter() - start < 0.25:
            t = time.perf_counter()
            product(a, b, layout)
            best = min(best, time.perf_counter() - t)
        detail["%s%dx%dx%d" % (layout, m, k, n)] = round(2.0 * m * k * n / best / 1e9, 1)
        # Every shape counts once, so the total is a time-weighted (harmonic) mean, as in a training step.
        flops += 2.0 * m * k * n
        seconds += best
    print(json.dumps(dict(library=path, version=version, kernel=core, gflops=round(flops / seconds / 1e9, 1),
                          detail=detail, correct=not failed, failed=failed, max_int_err=worst_int,
                          max_float_err=round(worst_float, 9), threads=torch.get_num_threads())))


def run_candidate(name, threads, checks_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if name != "auto":
        env["OPENBLAS_CORETYPE"] = name
    env["OPENBLAS_VERBOSE"] = "2"  # "Core: X" / "Core not found: X" on stderr
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", checks_path, "--threads", str(threads)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return dict(status="unusable: timed out after 120 s")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        how = "signal %d" % -proc.returncode if proc.returncode < 0 else "exit code %d" % proc.returncode
        return dict(status="unusable: crashed (%s) %s" % (how, proc.stderr.strip().splitlines()[-1:]))
    r = json.loads(lines[-1])
    if name != "auto" and "Core not found" in proc.stderr:
        # This build does not know the name (or, OpenBLAS 0.3.21's bug, does not look it up: its name loop stops
        # before Cooperlake) and fell back to its own detection: the run measured auto's kernel again.
        r["status"] = "not selectable in this build (fell back to auto: %s)" % r["kernel"]
    else:
        r["status"] = "ok" if r["correct"] else "WRONG RESULTS: " + "; ".join(r["failed"][:3])
    return r


def machine_key(threads):
    import torch
    path, version, _ = openblas()
    model, flags = cpu_info()
    text = "|".join([platform.node(), model, " ".join(sorted(flags)), str(path), version, torch.__version__, str(threads)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def probe(threads):
    model, flags = cpu_info()
    import torch
    fd, checks_path = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        make_checks(torch, checks_path)
        results = []
        for name, needs in CANDIDATES:
            missing = [f for f in needs if f not in flags]
            if missing:
                r = dict(status="skipped: CPU lacks " + ",".join(missing))
            else:
                r = run_candidate(name, threads, checks_path)
            r["coretype"] = name
            results.append(r)
        # The machine is shared: a second round in reverse order (speed only), and each candidate keeps its better
        # round, so a burst of someone else's build does not decide the choice.
        for r in reversed(results):
            if r["status"] == "ok":
                again = run_candidate(r["coretype"], threads, "-")
                r["rounds"] = [r["gflops"], again.get("gflops", 0.0)]
                if again.get("gflops", 0.0) > r["gflops"]:
                    r["gflops"], r["detail"] = again["gflops"], again["detail"]
        for r in results:
            print("  %-15s %-11s %8s GFLOP/s %-14s %s" % (r["coretype"], r.get("kernel", "-"), r.get("gflops", "-"),
                  "(%s, %s)" % tuple(r["rounds"]) if "rounds" in r else "", r["status"]), file=sys.stderr)
    finally:
        os.unlink(checks_path)
    if "avx2" in flags:
        print("  %-15s not probed: SSE-only kernels cannot beat AVX2 ones on this CPU" % PRE_AVX, file=sys.stderr)
    usable = [r for r in results if r["status"] == "ok"]
    best = max(usable, key=lambda r: r["gflops"]) if usable else None
    return dict(blas_probe=True, cpu=model, threads=threads, key=machine_key(threads),
                chosen=best["coretype"] if best else "auto",
                blas=("OpenBLAS %s %s" % (best["version"], best["kernel"])) if best else "unknown (no candidate passed)",
                candidates=[dict(coretype=r["coretype"], kernel=r.get("kernel"), gflops=r.get("gflops"),
                                 correct=r.get("correct"), status=r["status"], rounds=r.get("rounds"), detail=r.get("detail"),
                                 max_int_err=r.get("max_int_err"), max_float_err=r.get("max_float_err")) for r in results])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache")
    ap.add_argument("--reprobe", action="store_true")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        return child(a.threads, a.child)
    if a.cache and not a.reprobe and os.path.exists(a.cache):
        with open(a.cache) as f:
            cached = json.load(f)
        if cached.get("key") == machine_key(a.threads):
            print("BLAS probe: cached in %s (--reprobe to redo): %s" % (a.cache, cached["blas"]), file=sys.stderr)
            print(json.dumps(cached))
            return
    print("BLAS probe: OpenBLAS core types, %d thread(s), float32 GFLOP/s on training shapes:" % a.threads, file=sys.stderr)
    start = time.time()
    result = probe(a.threads)
    print("  chosen: %s (%s) in %.0f s" % (result["chosen"], result["blas"], time.time() - start), file=sys.stderr)
    if a.cache:
        with open(a.cache, "w") as f:
            json.dump(result, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
