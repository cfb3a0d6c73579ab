#!/usr/bin/python3
"""What a Hugging Face user does with a Loom export, written without Loom's code.

  hf_reference.py logits EXPORT_DIR IDS OUT.json
      Reads config.json and the weights (model.safetensors, or the shards that
      model.safetensors.index.json lists; F32 or BF16) with plain PyTorch, runs the Llama forward
      pass as transformers' LlamaForCausalLM defines it (RMSNorm, rotate-half RoPE with linear
      scaling, grouped-query causal attention, SwiGLU, tied or separate head) in float64 over the
      comma-separated token ids IDS, and writes the logits [len(IDS)][vocab_size].

  hf_reference.py chat EXPORT_DIR CONVERSATIONS.json OUT.json
      Renders each conversation (a list of {"role", "content"}) with tokenizer_config.json's
      chat_template the way transformers' apply_chat_template does (jinja2's immutable sandbox,
      trim_blocks, lstrip_blocks), without and with add_generation_prompt (the conversation minus
      its last message), and writes [{"text": ..., "prompt": ...}].

Run under Debian's /usr/bin/python3 (python3-torch, python3-jinja2);
tests/integration/hf_export_test.cc compares the results with Loom's.
"""
import json
import math
import os
import struct
import sys


def read_safetensors(path):
    import torch
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    start = 8 + length
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = bytearray(data[start + begin:start + end])
        if t["dtype"] == "F32":
            tensor = torch.frombuffer(raw, dtype=torch.float32)
        elif t["dtype"] == "BF16":
            tensor = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            raise SystemExit(f"{path}: {name} has dtype {t['dtype']}")
        out[name] = tensor.reshape(t["shape"]).to(torch.float64)
    return out


def read_weights(export):
    index = os.path.join(export, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(export, "model.safetensors"))
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(export, name)))
    return weights


def logits(export, ids):
    import torch
    with open(os.path.join(export, "config.json")) as f:
        c = json.load(f)
    w = read_weights(export)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads", heads)
    head_dim = c.get("head_dim") or hidden // heads
    eps = c["rms_norm_eps"]
    factor = 1.0
    if c.get("rope_scaling"):
        assert c["rope_scaling"].get("rope_type", c["rope_scaling"].get("type")) == "linear"
        factor = c["rope_scaling"]["factor"]

    def rms_norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    n = len(ids)
    inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(n, dtype=torch.float64) / factor, inv_freq)
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
    mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(n, heads, head_dim).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(n, kv_heads, head_dim).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(n, kv_heads, head_dim).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=0)
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        scores = q @ k.transpose(1, 2) / math.sqrt(head_dim) + mask
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(n, heads * head_dim)
        x = x + attended @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    return (x @ head.T).tolist()


def chat(export, conversations):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    with open(os.path.join(export, "tokenizer_config.json")) as f:
        config = json.load(f)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(config["chat_template"])
    specials = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    return [{"text": template.render(messages=m, add_generation_prompt=False, **specials),
             "prompt": template.render(messages=m[:-1], add_generation_prompt=True, **specials)}
            for m in conversations]


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("logits", "chat"):
        raise SystemExit(__doc__)
    mode, export, arg, out = sys.argv[1:]
    if mode == "logits":
        import torch
        torch.set_num_threads(1)
        result = logits(export, [int(i) for i in arg.split(",")])
    else:
        with open(arg) as f:
            result = chat(export, json.load(f))
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
