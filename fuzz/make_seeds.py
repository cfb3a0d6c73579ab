#!/usr/bin/python3
"""Writes the crafted seed files of fuzz/corpus/ (the copies of examples/plans/ included).

Run from anywhere with Debian's /usr/bin/python3 (PyYAML); rewrites only the files it names, so
inputs the fuzzer added to a corpus by hand stay. Small on purpose: seeds are committed.
"""
import hashlib
import json
import pathlib
import struct

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# ---- plans: the examples as YAML and JSON, and small textprotos --------------------------------
for plan in sorted((ROOT / "examples" / "plans").glob("*.yaml")):
    text = plan.read_text()
    put("plan", plan.name, text)
    if plan.name in ("demo.yaml", "llama3_tiny.yaml"):
        put("plan", plan.stem + ".json", json.dumps(yaml.safe_load(text), indent=1))
put("plan", "tiny.textproto", """name: "tiny"
model { layers: 2 d_model: 64 heads: 4 kv_heads: 2 ffn_size: 128 vocab_size: 512 max_seq_len: 128 }
stages {
  name: "core" kind: STAGE_KIND_PRETRAIN tokens: 65536
  batch_ramp { at_tokens: 0 global_batch_tokens: 1024 }
  seq_len_schedule { at_tokens: 0 seq_len: 64 }
  data_mix { at_tokens: 0 weights { key: "english" value: 1 } }
}
stages { name: "avg" kind: STAGE_KIND_AVERAGE from: "core" average { last_k: 2 } }
""")
put("plan", "repeat.yaml", """name: rounds
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512, max_seq_len: 128}
stages:
  - name: base
    kind: pretrain
    tokens: 64Ki
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {english: 1}}]
  - name: rounds
    repeat:
      times: 2
      initial: {sft: base}
      stages:
        - name: sft
          kind: sft
          from: sft
          tokens: 8Ki
          dataset: {source: sft_math}
""")

# ---- safetensors -------------------------------------------------------------------------------
def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "f32.safetensors", safetensors(
    [("w", "F32", [2, 3], struct.pack("<6f", 1, 2, 3, 4, 5, 6)), ("b", "F32", [3], struct.pack("<3f", 0, -1, 1))],
    {"format": "pt"}))
put("safetensors", "bf16_f16.safetensors", safetensors(
    [("h", "BF16", [4], struct.pack("<4H", 0x3F80, 0xC000, 0x7FC0, 0x0000)),
     ("f", "F16", [2, 2], struct.pack("<4H", 0x3C00, 0xC000, 0x7C00, 0x0001))]))
put("safetensors", "ints.safetensors", safetensors(
    [("tokens", "I32", [4], struct.pack("<4i", 1, 2, 3, -4)), ("ids", "I64", [2], struct.pack("<2q", 7, 1 << 40))]))
# No empty tensor here: ReadF32 of one into an empty vector is fuzz/regressions/safetensors/.
put("safetensors", "scalar.safetensors", safetensors([("s", "F32", [], struct.pack("<f", 3.5))], {}))

# ---- token shards (data/shard.h's layout) ------------------------------------------------------
def shard(docs, width, vocab):
    tokens = [t for d in docs for t in d]
    fmt = "<%d%s" % (len(tokens), "H" if width == 2 else "I")
    body = struct.pack(fmt, *tokens)
    body += b"\0" * (-(128 + len(body)) % 8)
    index_offset = 128 + len(body)
    index, n = [0], 0
    for d in docs:
        n += len(d)
        index.append(n)
    tok_hash = hashlib.sha256(b"tokenizer").hexdigest().encode()
    header = b"LOOMSHRD" + struct.pack("<IIIIQQQ", 1, width, vocab, 0, len(tokens), len(docs), index_offset)
    header += tok_hash + b"\0" * 16
    assert len(header) == 128
    return header + body + struct.pack("<%dQ" % len(index), *index)


put("shard", "u16.bin", shard([[1, 2, 3], [4], [5, 6, 7, 8, 9]], 2, 512))
put("shard", "u32.bin", shard([[70000, 1], [2, 3, 99999]], 4, 100000))
put("shard", "empty_doc.bin", shard([[], [1], []], 2, 16))
put("shard", "no_docs.bin", shard([], 2, 16))

# ---- checkpoint manifests (fuzz_checkpoint_manifest.cc writes a 5-byte model.safetensors) -----
hello = hashlib.sha256(b"hello").hexdigest()
put("checkpoint_manifest", "verified.json", json.dumps({
    "formatVersion": 1, "planId": "p", "stage": "core", "step": "1", "tokens": "4096",
    "model": {"layers": 2, "dModel": 64}, "dp": 1, "tp": 1, "pp": 1,
    "dataState": "AAEC", "rngState": "",
    "files": {"model.safetensors": {"sha256": hello, "bytes": "5", "role": "model"}},
    "createdMs": "1700000000000", "final": True, "metadata": {"k": "v"}, "tokenizerSha256": hello}, indent=1))
put("checkpoint_manifest", "bad_digest.json", json.dumps({
    "format_version": 1, "files": {"model.safetensors": {"sha256": "00" * 32, "bytes": 5, "role": "model"}}}))
put("checkpoint_manifest", "missing_file.json", json.dumps({
    "format_version": 1, "files": {"optimizer.safetensors": {"sha256": hello, "bytes": 5}}}))
put("checkpoint_manifest", "version2.json", '{"format_version": 2, "unknown_field": [1, 2]}')

# ---- chat JSONL --------------------------------------------------------------------------------
put("chat_jsonl", "openai.jsonl",
    '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}\n'
    '{"messages":[{"role":"user","content":"What is 2 + 2?"},{"role":"assistant","content":"2 + 2 = 4."}]}\n')
put("chat_jsonl", "sharegpt.jsonl",
    '{"conversations":[{"from":"system","value":"s"},{"from":"human","value":"q"},{"from":"gpt","value":"a"}]}\n')
put("chat_jsonl", "preferences.jsonl",
    '{"prompt":"What is 6 * 7?","chosen":"6 * 7 = 42. Answer: 42","rejected":"6 * 7 = 48. Answer: 48"}\n'
    '{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"assistant","content":"a"}],'
    '"rejected":[{"role":"assistant","content":"b"}]}\n')
put("chat_jsonl", "bad_lines.jsonl", '{\n{"messages":[{"role":"robot","content":"x"}]}\n\n{"prompt":"q","chosen":"a"}\n')

# ---- rank -> daemon frames: varint length + loom.v1.WorkerMessage -------------------------------
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 1:
        return key + struct.pack("<d", payload)
    return key + varint(len(payload)) + payload


def frame(msg):
    return varint(len(msg)) + msg


rank_ref = field(1, 2, b"job-1") + field(2, 0, 1) + field(3, 0, 0)
progress = (field(1, 2, rank_ref) + field(2, 0, 10) + field(3, 0, 40960) + field(4, 1, 2.5)
            + field(10, 2, field(1, 2, b"english") + field(2, 1, 1.0))
            + field(11, 2, field(1, 2, b"english") + field(2, 0, 40960)))
checkpoint = (field(1, 2, rank_ref) + field(2, 0, 10) + field(4, 2, b"/ckpt/p/core/step-000010")
              + field(5, 0, 2) + field(6, 0, 1) + field(7, 0, 1) + field(8, 1, 0.25))
put("rank_protocol", "progress_checkpoint.bin", frame(field(3, 2, progress)) + frame(field(4, 2, checkpoint)))
put("rank_protocol", "empty_message.bin", frame(b""))
put("rank_protocol", "truncated.bin", frame(field(3, 2, progress))[:-3])
# Also an Assignment (ReadAssignment reads the same bytes): rank, plan id, seed.
put("rank_protocol", "assignment.pb", field(1, 2, rank_ref) + field(2, 2, b"plan") + field(7, 0, 42))

# ---- dictionaries (libFuzzer -dict): plan.proto's field names and enum values ------------------
import re

proto = (ROOT / "proto" / "loom" / "v1" / "plan.proto").read_text()
words = set()
for m in re.finditer(r"^\s*(?:optional |repeated )?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+;", proto, re.M):
    words.add(m.group(1))
for enum in re.finditer(r"enum (\w+) \{(.*?)\}", proto, re.S):
    values = re.findall(r"^\s*([A-Z0-9_]+)\s*=", enum.group(2), re.M)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.group(1)).upper() + "_"
    for v in values:
        words.add(v)
        if not v.endswith("_UNSPECIFIED"):
            words.add((v[len(prefix):] if v.startswith(prefix) else v.split("_", 1)[-1]).lower())
words |= {"repeat", "times", "initial", "Ki", "Mi", "Gi", "K", "M", "G", "true", "false", "null",
          "~", "- ", ": ", "{", "}", "[", "]", "&a", "*a", "<<: ", "---", "!!str", "1e-3", "-1"}
(ROOT / "fuzz" / "dict").mkdir(exist_ok=True)
with open(ROOT / "fuzz" / "dict" / "plan.dict", "w") as f:
    f.write("# libFuzzer dictionary for fuzz_plan, written by fuzz/make_seeds.py from plan.proto.\n")
    for w in sorted(words):
        f.write('"%s"\n' % w.replace("\\", "\\\\").replace('"', '\\"'))
