#!/usr/bin/python3
"""PyTorch eager peer of bench/train_step: the same Llama-family model (RMSNorm, rotate-half RoPE,
grouped-query causal attention, SwiGLU, untied head), fp32, mean cross-entropy, AdamW with
global-norm clipping, on random tokens. Prints one JSON line with tokens/s.

Run by bench/train_step (which passes the config); needs Debian's python3-torch under
/usr/bin/python3. torch 1.13 has no fused attention, so attention is the plain eager
softmax(QK^T + mask)V that an eager model of this size would use.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
for name in ["layers", "d_model", "heads", "kv_heads", "ffn", "vocab", "batch", "seq", "threads", "steps",
             "warmup"]:
    p.add_argument("--" + name, type=int, required=True)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
hd = a.d_model // a.heads


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
        ang = torch.outer(torch.arange(a.seq).float(), inv)
        ang = torch.cat([ang, ang], -1)
        self.register_buffer("cos", ang.cos()[None, None])
        self.register_buffer("sin", ang.sin()[None, None])
        self.register_buffer("mask", torch.full((a.seq, a.seq), float("-inf")).triu(1))

    def forward(self, tokens):
        B, T = tokens.shape
        x = self.embed(tokens)
        for blk in self.blocks:
            h = rms(x, blk.n1)
            q = blk.q(h).view(B, T, a.heads, hd).transpose(1, 2)
            k = blk.k(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
            v = blk.v(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
            q, k = rope(q, self.cos, self.sin), rope(k, self.cos, self.sin)
            rep = a.heads // a.kv_heads
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + self.mask
            y = att.softmax(-1) @ v
            x = x + blk.o(y.transpose(1, 2).reshape(B, T, a.heads * hd))
            h = rms(x, blk.n2)
            x = x + blk.down(F.silu(blk.gate(h)) * blk.up(h))
        return self.head(rms(x, self.norm))


model = Model()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
data = torch.randint(0, a.vocab, (a.steps + a.warmup, a.batch, a.seq + 1))


def step(i):
    batch = data[i]
    logits = model(batch[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, a.vocab), batch[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


for i in range(a.warmup):
    step(i)
start = time.perf_counter()
for i in range(a.steps):
    step(a.warmup + i)
seconds = time.perf_counter() - start
print(json.dumps({"tokens_per_second": a.steps * a.batch * a.seq / seconds, "seconds": seconds,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
