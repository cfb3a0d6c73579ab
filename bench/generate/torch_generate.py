#!/usr/bin/python3
"""PyTorch eager peer of bench/generate: the same Llama-family model as bench/train_step's peer
(RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU, untied head), fp32, generating with a
key/value cache: one batched forward over the prompts (prefill), then one forward per new token for
the whole batch, greedy. Prints one JSON line with generated tokens/s.

Run by bench/generate (which passes the config); needs Debian's python3-torch under /usr/bin/python3.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
for name in ["layers", "d_model", "heads", "kv_heads", "ffn", "vocab", "batch", "prompt", "new", "threads",
             "repeats"]:
    p.add_argument("--" + name, type=int, required=True)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
hd = a.d_model // a.heads
max_len = a.prompt + a.new


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        d = a.d_model
        self.n1 = torch.nn.Parameter(torch.ones(d))
        self.q = torch.nn.Linear(d, a.heads * hd, bias=False)
        self.k = torch.nn.Linear(d, a.kv_heads * hd, bias=False)
        self.v = torch.nn.Linear(d, a.kv_heads * hd, bias=False)
        self.o = torch.nn.Linear(a.heads * hd, d, bias=False)
        self.n2 = torch.nn.Parameter(torch.ones(d))
        self.gate = torch.nn.Linear(d, a.ffn, bias=False)
        self.up = torch.nn.Linear(d, a.ffn, bias=False)
        self.down = torch.nn.Linear(a.ffn, d, bias=False)


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def rope(x, cos, sin):
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(a.vocab, a.d_model)
        self.blocks = torch.nn.ModuleList([Block() for _ in range(a.layers)])
        self.norm = torch.nn.Parameter(torch.ones(a.d_model))
        self.head = torch.nn.Linear(a.d_model, a.vocab, bias=False)
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(max_len).float(), inv)
        ang = torch.cat([ang, ang], -1)
        self.register_buffer("cos", ang.cos()[None, None])
        self.register_buffer("sin", ang.sin()[None, None])

    def forward(self, tokens, start, cache):
        """tokens [B, T] at positions start..start+T-1; cache: per layer (k, v) [B, kv, max_len, hd]."""
        B, T = tokens.shape
        x = self.embed(tokens)
        cos, sin = self.cos[:, :, start:start + T], self.sin[:, :, start:start + T]
        end = start + T
        mask = torch.full((T, end), float("-inf")).triu(start + 1)
        for blk, (kc, vc) in zip(self.blocks, cache):
            h = rms(x, blk.n1)
            q = blk.q(h).view(B, T, a.heads, hd).transpose(1, 2)
            k = blk.k(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
            v = blk.v(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            kc[:, :, start:end] = k
            vc[:, :, start:end] = v
            rep = a.heads // a.kv_heads
            keys, values = kc[:, :, :end].repeat_interleave(rep, 1), vc[:, :, :end].repeat_interleave(rep, 1)
            att = (q @ keys.transpose(-1, -2)) / math.sqrt(hd) + mask
            y = att.softmax(-1) @ values
            x = x + blk.o(y.transpose(1, 2).reshape(B, T, a.heads * hd))
            h = rms(x, blk.n2)
            x = x + blk.down(F.silu(blk.gate(h)) * blk.up(h))
        return self.head(rms(x[:, -1], self.norm))


model = Model()
prompts = torch.randint(0, a.vocab, (a.batch, a.prompt))


@torch.no_grad()
def generate():
    cache = [(torch.zeros(a.batch, a.kv_heads, max_len, hd), torch.zeros(a.batch, a.kv_heads, max_len, hd))
             for _ in range(a.layers)]
    logits = model(prompts, 0, cache)
    out = []
    for i in range(a.new):
        nxt = logits.argmax(-1, keepdim=True)
        out.append(nxt)
        if i + 1 < a.new:
            logits = model(nxt, a.prompt + i, cache)
    return torch.cat(out, 1)


generate()  # warm-up
best = float("inf")
for _ in range(a.repeats):
    start = time.perf_counter()
    generate()
    best = min(best, time.perf_counter() - start)
print(json.dumps({"tokens_per_second": a.batch * a.new / best, "seconds": best, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
