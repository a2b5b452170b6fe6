#!/usr/bin/python3
"""PyTorch eager peer of the Microsoft.ML.Orpo benchmark, written from the formulas.

Same models (stories260K from models/stories260K/hf, a random N(0, 0.02) 41.7M LLaMA), same ORPO step (one
concatenated chosen+rejected forward over 2B right-padded rows, mean response log-probs via gather - logsumexp,
NLL + lambda * -log sigmoid(log odds) with the stable log1mexp, backward, AdamW), same greedy decoding with a
pre-allocated KV cache, and full recompute for the ratio. Each scenario runs in its own process (peak RSS is per
scenario). Prints one JSON object per result line, with the schema of the .NET harness.

bf16 scenarios (train.*.bf16.*) are PyTorch's own mixed precision: forward and loss under
torch.autocast("cpu", dtype=torch.bfloat16) (linear and matmul run in bf16), the LM head's logits widened to fp32
before logsumexp (as the .NET side does), fp32 parameters, gradients and AdamW state.

Usage: /usr/bin/python3 orpo_peer.py [--quick] [--threads N] [--only a,b] [--out FILE]
"""
import argparse, json, math, os, random, resource, struct, subprocess, sys, time

import torch
import torch.utils.checkpoint
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STORIES = os.path.join(ROOT, "models", "stories260K", "hf")
LLAMA41M = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=8, vocab_size=32000, rms_norm_eps=1e-5, rope_theta=10000.0)
# Qwen2.5-0.5B's shape (random weights): q/k/v biases, tied embeddings, 494,032,768 parameters.
QWEN05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
               num_key_value_heads=2, vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1e6, attention_bias=True)


class LoraLinear(torch.nn.Module):
    """PEFT's LoRA layer from its formula: y = W x + b + (alpha / r) B(A dropout(x)), W and b frozen (optionally
    stored in bf16 and multiplied in fp32, as ours), A Kaiming-uniform (+-1/sqrt(in)), B zero. dora: PEFT's
    DoraLinearLayer with dropout, y = W x + b + (f - 1) W d(x) + f s B A d(x), f = m / ||W + s B A|| per row with the
    norm detached, m starting at the row norms of W."""

    def __init__(self, base, r, alpha, dropout, bf16_base, dora=False):
        super().__init__()
        base.requires_grad_(False)
        if bf16_base:
            base.to(torch.bfloat16)
        self.base, self.scale, self.p = base, alpha / r, dropout
        bound = 1 / math.sqrt(base.in_features)
        self.lora_A = torch.nn.Parameter(torch.empty(r, base.in_features).uniform_(-bound, bound))
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, r))
        self.magnitude = torch.nn.Parameter(torch.linalg.norm(base.weight.float(), dim=1)) if dora else None

    def forward(self, x):
        w, b = self.base.weight, self.base.bias
        if w.dtype != x.dtype and not torch.is_autocast_cpu_enabled():
            w, b = w.to(x.dtype), (b.to(x.dtype) if b is not None else None)
        y = F.linear(x, w, b)
        if self.magnitude is None:
            return y + self.scale * F.linear(F.linear(F.dropout(x, self.p, self.training), self.lora_A), self.lora_B)
        norm = torch.linalg.norm(w + self.scale * (self.lora_B @ self.lora_A).detach(), dim=1).detach()
        f = self.magnitude / norm
        if self.p > 0 and self.training:
            x = F.dropout(x, self.p, True)
            base_result = F.linear(x, w)
        else:
            base_result = y if b is None else y - b
        return y + (f - 1) * base_result + f * F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


def apply_lora(model, r=16, alpha=32, dropout=0.05, bf16_base=False, dora=False):
    """Adapters on all seven projections of every layer; everything else frozen (embedding/LM head and norms too)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.layers:
        for block, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")), (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for n in names:
                setattr(block, n, LoraLinear(getattr(block, n), r, alpha, dropout, bf16_base, dora))
    return model


# ---------------------------------------------------------------------------------------------- model
class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.h, self.k = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = d // self.h
        bias = c.get("attention_bias", False)
        self.q_proj = torch.nn.Linear(d, self.h * self.hd, bias=bias)
        self.k_proj = torch.nn.Linear(d, self.k * self.hd, bias=bias)
        self.v_proj = torch.nn.Linear(d, self.k * self.hd, bias=bias)
        self.o_proj = torch.nn.Linear(self.h * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask, cache, layer):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.k, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.k, self.hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        if self.k != self.h:
            k = k.repeat_interleave(self.h // self.k, 1)
            v = v.repeat_interleave(self.h // self.k, 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        if mask is not None:
            scores = scores + mask
        y = scores.softmax(-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.h * self.hd))


class MLP(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = torch.nn.Linear(d, i, bias=False)
        self.up_proj = torch.nn.Linear(d, i, bias=False)
        self.down_proj = torch.nn.Linear(i, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn, self.mlp = Attention(c), MLP(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask, cache, i):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, i)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama(torch.nn.Module):
    """LLaMA decoder with a tied LM head; parameter names follow the HF state dict."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.recompute = False
        self.embed_tokens = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = torch.nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        hd = c["hidden_size"] // c["num_attention_heads"]
        self.register_buffer("inv", 1.0 / c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd), persistent=False)

    def hidden(self, ids, positions=None, mask=None, cache=None):
        b, t = ids.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + t).unsqueeze(0).expand(b, t)
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv.to(torch.float32)
        full = torch.cat((angles, angles), -1).unsqueeze(1)
        cos, sin = full.cos(), full.sin()
        if mask is None and t > 1:
            mask = torch.full((t, t), float("-inf")).triu(1)
        x = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            if self.recompute and torch.is_grad_enabled() and cache is None:
                # Activation recomputation, as ours: keep each layer's input, rerun the layer in the backward pass
                # (the RNG state is replayed, so the LoRA dropout masks are the same).
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, None, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache, i)
        if cache is not None:
            cache.length = start + t
        return self.norm(x)

    def logits(self, hidden):
        return hidden @ self.embed_tokens.weight.t()


class Cache:
    def __init__(self, c, batch, max_length):
        hd = c["hidden_size"] // c["num_attention_heads"]
        shape = (batch, c["num_key_value_heads"], max_length, hd)
        self.keys = [torch.zeros(shape) for _ in range(c["num_hidden_layers"])]
        self.values = [torch.zeros(shape) for _ in range(c["num_hidden_layers"])]
        self.length = 0

    def append(self, layer, k, v):
        t = k.shape[2]
        self.keys[layer][:, :, self.length:self.length + t] = k
        self.values[layer][:, :, self.length:self.length + t] = v
        return self.keys[layer][:, :, :self.length + t], self.values[layer][:, :, :self.length + t]


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info["dtype"]
        a, b = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).view(info["shape"]).clone()
    return out


def load(name):
    if name == "stories260K":
        with open(os.path.join(STORIES, "config.json")) as f:
            c = json.load(f)
        model = Llama(c)
        weights = {k[len("model."):] if k.startswith("model.") else k: v
                   for k, v in load_safetensors(os.path.join(STORIES, "model.safetensors")).items()}
        weights.pop("lm_head.weight", None)
        model.load_state_dict(weights, strict=True)
        return model
    torch.manual_seed(1234)
    model = Llama(dict(QWEN05B if name == "qwen05b" else LLAMA41M))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.02)
            else:
                p.fill_(0 if n.endswith(".bias") else 1)
    return model


# ---------------------------------------------------------------------------------------------- ORPO
def log1mexp(x):
    x = x.clamp_max(-1e-15)
    near = x > -math.log(2)
    return torch.where(near, torch.where(near, x, torch.full_like(x, -0.5)).expm1().neg().log(),
                       torch.where(near, torch.full_like(x, -1.0), x).exp().neg().log1p())


def pairs(count, prompt, response, vocab, seed):
    r = random.Random(seed)
    ids = lambda n: [r.randrange(3, vocab) for _ in range(n)]
    out = []
    for _ in range(count):
        p, c, j = ids(prompt), ids(response), ids(response)
        p[0], c[-1], j[-1] = 1, 2, 2
        out.append((p, c, j))
    return out


def batch_tensors(ps):
    b = len(ps)
    length = max(len(p) + max(len(c), len(j)) for p, c, j in ps)
    ids = torch.zeros(2 * b, length, dtype=torch.long)
    resp = torch.zeros(2 * b, length - 1)
    for row in range(2 * b):
        p, c, j = ps[row % b]
        seq = p + (c if row < b else j)
        ids[row, :len(seq)] = torch.tensor(seq)
        resp[row, len(p) - 1:len(seq) - 1] = 1
    return ids, ids[:, 1:].contiguous(), resp


def orpo_loss(model, ids, targets, resp, lam):
    b = ids.shape[0] // 2
    hidden = model.hidden(ids)[:, :-1]
    logits = model.logits(hidden).float()  # bf16 under autocast; log-probabilities in fp32 either way
    token = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    mean = (token * resp).sum(1) / resp.sum(1)
    nll = -(token[:b] * resp[:b]).sum() / resp[:b].sum()
    lw, ll = mean[:b], mean[b:]
    log_odds = (lw - ll) - (log1mexp(lw) - log1mexp(ll))
    return nll + lam * (-F.logsigmoid(log_odds).mean())


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def train(name, prompt, response, npairs, warmup, steps, bf16=False, lora=None, recompute=False, micro=None, dora=False):
    """lora: None (full fine-tuning) or "fp32"/"bf16" (the frozen base's storage type): rank 16, alpha 32, dropout
    0.05, all seven projections; AdamW over A and B only (and DoRA's magnitudes with dora). micro: pairs per forward and backward (None: all of a
    step's), the step's gradients accumulated over them; each micro-batch's loss is scaled by its share of the step's
    pairs, which is the step's loss here because every pair has the same lengths."""
    micro = micro or npairs
    model = load(name)
    params = sum(p.numel() for p in model.parameters())
    if lora is not None:
        torch.manual_seed(42)
        apply_lora(model, bf16_base=lora == "bf16", dora=dora)
    model.recompute = recompute
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    data = pairs(npairs * (warmup + steps), prompt, response, min(model.c["vocab_size"], 32000), 42)
    rss_before = rss_mib()
    times, cpu, losses = [], [], []
    for s in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step_pairs = data[s * npairs:(s + 1) * npairs]
        opt.zero_grad(set_to_none=False)
        loss = 0.0
        for m in range(0, npairs, micro):
            ids, targets, resp = batch_tensors(step_pairs[m:m + micro])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                part = orpo_loss(model, ids, targets, resp, 0.1) * (micro / npairs)
            part.backward()
            loss += part.detach()
        torch.sqrt(sum((p.grad * p.grad).sum() for p in trainable)).item()  # gradient norm, as ours
        opt.step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        losses.append(loss.item())
    tokens = 2.0 * npairs * (prompt + response)
    seconds = sum(times[warmup:])
    tps = tokens * steps / seconds
    c = model.c
    # Under LoRA the frozen base does no weight-gradient product: 4N for it, 6 per adapter parameter (as ours).
    weight_flops = 6.0 * params if lora is None else 4.0 * params + 6.0 * sum(p.numel() for p in trainable)
    flops = weight_flops + 12.0 * c["num_hidden_layers"] * c["hidden_size"] * (prompt + response)
    return dict(metric="train_tokens_per_s", value=round(tps, 2), model_gflops=round(flops * tps / 1e9, 2), params=params,
                prompt=prompt, response=response, pairs=npairs, steps=steps, step_s=round(seconds / steps, 3),
                cpu_step_s=round(sum(cpu[warmup:]) / steps, 3),
                loss_first=round(losses[0], 5), loss_last=round(losses[-1], 5), peak_rss_mib=round(peak_rss_mib(), 1),
                rss_before_mib=round(rss_before, 1), precision="bf16" if bf16 else "fp32", trainable_params=sum(p.numel() for p in trainable),
                recompute_activations=recompute, micro_batch=micro,
                lora="none" if lora is None else "r16 alpha32 dropout0.05 7 targets %s base" % lora)


def precision_profile(name, prompt, response, npairs, rounds):
    """fp32 against bf16 autocast, interleaved in one process on one model and batch (the .NET harness's
    profile.precision.*): each round times one full step per precision back to back (forward, backward, gradient
    norm, AdamW at learning rate 0, so every round does the same work); reports the medians and the median of the
    per-round fp32/bf16 ratios."""
    model = load(name)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids, targets, resp = batch_tensors(pairs(npairs, prompt, response, min(model.c["vocab_size"], 32000), 42))
    seconds, losses = {False: [], True: []}, {}
    for r in range(rounds + 1):  # round 0 warms up
        for bf16 in ((False, True) if r % 2 == 0 else (True, False)):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=False)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = orpo_loss(model, ids, targets, resp, 0.1)
            loss.backward()
            torch.sqrt(sum((p.grad * p.grad).sum() for p in model.parameters())).item()
            opt.step()
            if r == 0:
                losses[bf16] = loss.item()
            else:
                seconds[bf16].append(time.perf_counter() - start)
    median = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
    return dict(metric="bf16_speedup", value=round(median([a / b for a, b in zip(seconds[False], seconds[True])]), 3),
                fp32_step_s=round(median(seconds[False]), 3), bf16_step_s=round(median(seconds[True]), 3),
                fp32_rounds=",".join("%.3f" % t for t in seconds[False]), bf16_rounds=",".join("%.3f" % t for t in seconds[True]),
                fp32_loss=round(losses[False], 5), bf16_loss=round(losses[True], 5), tokens_per_step=2 * npairs * (prompt + response))


@torch.no_grad()
def generate(model, prompts, new_tokens, cache):
    ids = torch.tensor(prompts)
    b, p = ids.shape
    out = []
    if cache:
        kv = Cache(model.c, b, p + new_tokens)
        logits = model.logits(model.hidden(ids, cache=kv)[:, -1])
        for step in range(new_tokens):
            nxt = logits.argmax(-1)
            out.append(nxt.tolist())
            if step == new_tokens - 1:
                break
            logits = model.logits(model.hidden(nxt.view(b, 1), mask=None, cache=kv)[:, -1])
    else:
        for step in range(new_tokens):
            nxt = model.logits(model.hidden(ids)[:, -1]).argmax(-1)
            out.append(nxt.tolist())
            ids = torch.cat((ids, nxt.view(b, 1)), 1)
    return [list(r) for r in zip(*out)]


def gen(name, batch, prompt, new_tokens, cache):
    model = load(name)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    prompts = [p for p, _, _ in pairs(batch, prompt, 2, min(model.c["vocab_size"], 32000), 7)]
    generate(model, prompts, new_tokens if cache else 4, cache)  # warm-up: the same full-length run as ours
    start = time.perf_counter()
    out = generate(model, prompts, new_tokens, cache)
    seconds = time.perf_counter() - start
    tokens = sum(len(o) for o in out)
    c = model.c
    flops = 2.0 * params + 4.0 * c["num_hidden_layers"] * c["hidden_size"] * (prompt + new_tokens / 2.0)
    return dict(metric="gen_tokens_per_s", value=round(tokens / seconds, 2), model_gflops=round(flops * tokens / seconds / 1e9, 3),
                batch=batch, prompt=prompt, new_tokens=new_tokens, cache=cache, seconds=round(seconds, 3),
                peak_rss_mib=round(peak_rss_mib(), 1), first_ids=",".join(map(str, out[0][:8])))


def matmul_peak(dtype, quick):
    best, detail = 0.0, {}
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        for _ in range(2):
            a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < (0.5 if quick else 1.5):
            a @ b
            reps += 1
        g = 2.0 * n ** 3 * reps / (time.perf_counter() - start) / 1e9
        detail["n%d" % n] = round(g, 2)
        best = max(best, g)
    return round(best, 2), detail


def matmul(quick):
    """fp32 peak (value: the MFU denominator of fp32 scenarios) and bf16 peak (bf16_value: that of bf16 scenarios)."""
    fp32, fp32_detail = matmul_peak(torch.float32, quick)
    bf16, bf16_detail = matmul_peak(torch.bfloat16, quick)
    return dict(metric="matmul_gflops", value=fp32, detail=fp32_detail, bf16_value=bf16, bf16_detail=bf16_detail)


def plans(quick):
    w, s = 1, (1 if quick else 2)
    yield "matmul", lambda: matmul(quick)
    yield "train.stories260K.concat.64+192", lambda: train("stories260K", 64, 192, 4, 2, 4 if quick else 10)
    yield "train.stories260K.bf16.64+192", lambda: train("stories260K", 64, 192, 4, 2, 4 if quick else 10, bf16=True)
    for p, r in ((64, 192), (128, 128), (170, 86)):
        yield "train.llama41m.concat.%d+%d" % (p, r), (lambda p=p, r=r: train("llama41m", p, r, 4, w, s if p == 64 else 1))
        if p == 64:
            yield "train.llama41m.bf16.64+192", lambda: train("llama41m", 64, 192, 4, w, s, bf16=True)
    # LoRA against full fine-tuning (the .NET harness's lora.*): the 0.5B shape with recomputed activations, LoRA only
    # (its full fine-tuning would need far more memory here with full logits, and minutes per step).
    yield "lora.llama41m.full", lambda: train("llama41m", 64, 192, 4, w, s)
    for base in ("fp32", "bf16"):
        yield "lora.llama41m.%sbase" % base, (lambda base=base: train("llama41m", 64, 192, 4, w, s, lora=base))
    # DoRA with dropout 0.05 as PEFT computes it (the .NET harness's lora.*-dora.fp32base).
    yield "lora.llama41m-dora.fp32base", lambda: train("llama41m", 64, 192, 4, w, s, lora="fp32", dora=True)
    yield "lora.qwen05b-micro-dora.fp32base", lambda: train("qwen05b", 64, 192, 4, 1, 1, lora="fp32", micro=1, dora=True)
    # At the 0.5B shape only the usual fp32 base (each step takes minutes here).
    yield "lora.qwen05b.fp32base", lambda: train("qwen05b", 64, 192, 4, 1, 1, lora="fp32", recompute=True)
    # The same step with stored activations, one pair per forward and backward (the .NET harness's lora.qwen05b-micro.*).
    yield "lora.qwen05b-micro.fp32base", lambda: train("qwen05b", 64, 192, 4, 1, 1, lora="fp32", micro=1)
    # The same with bf16 autocast (the .NET harness's lora.qwen05b-micro-bf16.*: Precision = BFloat16).
    yield "lora.qwen05b-micro-bf16.fp32base", lambda: train("qwen05b", 64, 192, 4, 1, 1, bf16=True, lora="fp32", micro=1)
    n = 64 if quick else 256
    yield "profile.precision.stories260K", lambda: precision_profile("stories260K", 64, 192, 4, 4 if quick else 10)
    yield "profile.precision.llama41m", lambda: precision_profile("llama41m", 64, 192, 4, 2 if quick else 4)
    for model in ("stories260K", "llama41m"):
        for b in (1, 8):
            yield "gen.%s.cache.b%d" % (model, b), (lambda model=model, b=b: gen(model, b, 64, n, True))
            if model == "stories260K" or b == 1:
                yield "gen.%s.recompute.b%d" % (model, b), (lambda model=model, b=b: gen(model, b, 64, n, False))


def blas_name():
    """The BLAS kernel this process runs, as OpenBLAS itself reports it (e.g. "OpenBLAS 0.3.21 SkylakeX"), with
    "(auto)" when OPENBLAS_CORETYPE is unset, i.e. the library's own CPU detection chose it."""
    from blas_probe import openblas
    _, version, core = openblas()
    return "OpenBLAS %s %s%s" % (version, core, "" if os.environ.get("OPENBLAS_CORETYPE") else " (auto)")


def malloc_settings():
    """glibc allocator settings from the environment ("glibc defaults" when none): they move the peer's speed."""
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
    return " ".join("%s=%s" % (n, os.environ[n]) for n in names if n in os.environ) or "glibc defaults"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", default="")
    ap.add_argument("--out")
    ap.add_argument("--scenario")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for name, _ in plans(a.quick):
            print(name)
        return
    if a.scenario:
        if a.threads > 0:
            torch.set_num_threads(a.threads)
        result = dict(plans(a.quick))[a.scenario]()
        result.update(impl="pytorch-eager", scenario=a.scenario, threads=torch.get_num_threads(), torch=torch.__version__,
                      blas=blas_name(), malloc=malloc_settings())
        print(json.dumps(result), flush=True)
        return
    only = [o for o in a.only.split(",") if o]
    sink = open(a.out, "w") if a.out else None
    for name, _ in plans(a.quick):
        # Profiles run only when named, as in the .NET harness.
        if (only and not any(o in name for o in only)) or (not only and name.startswith(("profile", "lora."))):
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--scenario", name, "--threads", str(a.threads)] + (["--quick"] if a.quick else [])
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                print(line, flush=True)
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
        if proc.returncode:
            print("scenario %s failed with exit code %d" % (name, proc.returncode), file=sys.stderr)


if __name__ == "__main__":
    main()
