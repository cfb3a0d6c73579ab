#!/usr/bin/python3
"""Writes the golden fixtures the engine's equivalence test compares against.

The same Llama-family architecture as worker/engine/transformer.h, written plainly in PyTorch and
run in float64: embedding, RMSNorm, rotate-half RoPE, grouped-query causal attention with an
optional sliding window and packed segments, SwiGLU, final norm, output head (tied or not), mean
cross-entropy with ignore index -1, then three AdamW steps with gradient clipping.

For each config it writes engine/<name>.safetensors holding the float32 initial weights
("init/<name>"), the inputs, the logits, every parameter gradient ("grad/<name>") and the weights
after three optimizer steps ("after3/<name>"); the config and the loss go in the metadata.

Run with Debian's python3-torch (it imports only under /usr/bin/python3):
    /usr/bin/python3 tests/golden/make_engine_fixtures.py
CI does not run this; it runs the C++ side against the committed fixtures.
"""
import json
import math
import os
import struct

import torch

torch.set_default_dtype(torch.float64)
F64 = torch.float64

CONFIGS = [
    dict(name="mha", layers=2, d_model=32, heads=4, kv_heads=4, ffn=64, vocab=64, rope_theta=10000.0,
         window=0, local_layers=[], tied=False, batch=2, seq=16, ignore_every=0, segments=False),
    dict(name="gqa", layers=2, d_model=48, heads=6, kv_heads=2, ffn=96, vocab=80, rope_theta=500000.0,
         window=0, local_layers=[], tied=False, batch=2, seq=24, ignore_every=0, segments=False),
    dict(name="gqa_window_tied", layers=3, d_model=32, heads=4, kv_heads=2, ffn=64, vocab=64,
         rope_theta=10000.0, window=5, local_layers=[0, 2], tied=True, batch=2, seq=20, ignore_every=3,
         segments=True),
]
EPS = 1e-5
OPT = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=0.5)


def param_shapes(c):
    d, hd = c["d_model"], c["d_model"] // c["heads"]
    q, kv = c["heads"] * hd, c["kv_heads"] * hd
    shapes = [("model.embed_tokens.weight", (c["vocab"], d))]
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (q, d)),
                   (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.v_proj.weight", (kv, d)),
                   (p + "self_attn.o_proj.weight", (d, q)), (p + "post_attention_layernorm.weight", (d,)),
                   (p + "mlp.gate_proj.weight", (c["ffn"], d)), (p + "mlp.up_proj.weight", (c["ffn"], d)),
                   (p + "mlp.down_proj.weight", (d, c["ffn"]))]
    shapes.append(("model.norm.weight", (d,)))
    if not c["tied"]:
        shapes.append(("lm_head.weight", (c["vocab"], d)))
    return shapes


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def rope(x, positions, theta):
    hd = x.shape[-1]
    half = hd // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=F64) / hd)
    angle = positions[..., None].to(F64) * inv
    cos, sin = angle.cos()[:, :, None, :], angle.sin()[:, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(q, k, v, window, segments):
    B, T, H, hd = q.shape
    group = H // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(hd)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    mask = (j <= i)
    if window > 0:
        mask = mask & (i - j < window)
    mask = mask[None, None].expand(B, H, T, T)
    if segments is not None:
        same = segments[:, :, None] == segments[:, None, :]
        mask = mask & same[:, None]
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)


def forward(c, P, inputs, positions, segments):
    d, hd = c["d_model"], c["d_model"] // c["heads"]
    B, T = inputs.shape
    x = P["model.embed_tokens.weight"][inputs]
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, P[p + "input_layernorm.weight"])
        q = (h @ P[p + "self_attn.q_proj.weight"].T).view(B, T, c["heads"], hd)
        k = (h @ P[p + "self_attn.k_proj.weight"].T).view(B, T, c["kv_heads"], hd)
        v = (h @ P[p + "self_attn.v_proj.weight"].T).view(B, T, c["kv_heads"], hd)
        q, k = rope(q, positions, c["rope_theta"]), rope(k, positions, c["rope_theta"])
        window = c["window"] if l in c["local_layers"] else 0
        a = attention(q, k, v, window, segments).reshape(B, T, c["heads"] * hd)
        x = x + a @ P[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, P[p + "post_attention_layernorm.weight"])
        g = h @ P[p + "mlp.gate_proj.weight"].T
        u = h @ P[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ P[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, P["model.norm.weight"])
    head = P["model.embed_tokens.weight"] if c["tied"] else P["lm_head.weight"]
    return x @ head.T


def make_batch(c, gen):
    B, T, V = c["batch"], c["seq"], c["vocab"]
    inputs = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    if c["ignore_every"]:
        targets.view(-1)[:: c["ignore_every"]] = -1
    if c["segments"]:
        # Three packed examples per row, positions restarting in each.
        bounds = [0, 7, 13, T]
        segments = torch.zeros(B, T, dtype=torch.long)
        positions = torch.zeros(B, T, dtype=torch.long)
        for s in range(3):
            segments[:, bounds[s]:bounds[s + 1]] = s
            positions[:, bounds[s]:bounds[s + 1]] = torch.arange(bounds[s + 1] - bounds[s])
    else:
        segments = None
        positions = torch.arange(T)[None].expand(B, T)
    return inputs, targets, positions, segments


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors:
        t = t.detach().contiguous()
        dtype = "I32" if t.dtype in (torch.int32, torch.int64) else "F32"
        data = t.to(torch.int32 if dtype == "I32" else torch.float32).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine")
    os.makedirs(out_dir, exist_ok=True)
    for c in CONFIGS:
        gen = torch.Generator().manual_seed(1234)
        names = param_shapes(c)
        P = {}
        for name, shape in names:
            t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
            # Norm gains away from 1 so that their gradients matter; rounded to float32 so both
            # sides start from the same numbers.
            if len(shape) == 1:
                t = t + 0.1 * torch.randn(shape, generator=gen)
            P[name] = t.to(torch.float32).to(F64).requires_grad_(True)
        init = {n: P[n].detach().clone() for n, _ in names}
        inputs, targets, positions, segments = make_batch(c, gen)

        logits = forward(c, P, inputs, positions, segments)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, c["vocab"]), targets.view(-1), ignore_index=-1)
        loss.backward()
        grads = {n: P[n].grad.detach().clone() for n, _ in names}

        decay = [P[n] for n, s in names if len(s) == 2 and n != "model.embed_tokens.weight"]
        no_decay = [P[n] for n, s in names if not (len(s) == 2 and n != "model.embed_tokens.weight")]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"])
        norms = []
        for step in range(3):
            if step > 0:
                opt.zero_grad()
                l = torch.nn.functional.cross_entropy(
                    forward(c, P, inputs, positions, segments).view(-1, c["vocab"]), targets.view(-1),
                    ignore_index=-1)
                l.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_([P[n] for n, _ in names], OPT["grad_clip"])))
            opt.step()

        tensors = [("inputs", inputs), ("targets", targets), ("positions", positions)]
        if segments is not None:
            tensors.append(("segments", segments))
        tensors.append(("logits", logits.view(-1, c["vocab"])))
        tensors += [("init/" + n, init[n]) for n, _ in names]
        tensors += [("grad/" + n, grads[n]) for n, _ in names]
        tensors += [("after3/" + n, P[n]) for n, _ in names]
        meta = {"config": json.dumps(c), "optimizer": json.dumps(OPT), "loss": repr(float(loss)),
                "grad_norms": json.dumps(norms), "torch": torch.__version__}
        path = os.path.join(out_dir, c["name"] + ".safetensors")
        write_safetensors(path, tensors, meta)
        print(f"{path}: loss {float(loss):.6f}, grad norms {norms}, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
