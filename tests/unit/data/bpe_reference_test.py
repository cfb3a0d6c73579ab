#!/usr/bin/python3
"""Loom's byte-level BPE (data/byte_level_bpe.cc) against an independent plain-Python reference.

No Hugging Face `tokenizers` library is available offline, so this script is the reference: it
trains small byte-level BPE tokenizers on a fixed corpus by counting pairs, writes them as
Hugging Face tokenizer.json files in three shapes, encodes a test corpus with GPT-2's
encoder.py algorithm (Python's `regex` module for \\p{L} and \\p{N}), and checks that
`loom data tokenize --jsonl` gives the same ids for every line and decodes them back to the line.

  GPT-2 shape    pre_tokenizer ByteLevel{use_regex: true}, merges as "a b" strings, special
                 tokens also in model.vocab
  Llama-3 shape  Sequence[Split{Llama-3 pattern}, ByteLevel{use_regex: false}], merges as
                 ["a", "b"] pairs, ignore_merges, special tokens only in added_tokens
  Qwen2 shape    the Llama-3 shape with the Qwen2 pattern (one digit a piece) and an NFC normalizer

Run by CTest (data_bpe_reference_test); by hand:
  /usr/bin/python3 tests/unit/data/bpe_reference_test.py --loom build/cli/loom --source-dir .
Needs Debian's python3-regex (scripts/setup).
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import unicodedata

import regex

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
          r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

# Text the merges are learned from, besides some of the repository's own docs and code.
TRAINING = """
The quick brown fox jumps over the lazy dog. It's what they'd said: we'll see, you're right, I'm here.
Numbers: 1, 12, 123, 1234, 12345, 3.14159, 2026-12-04, $1,000,000 and 0x7fff.
def train(model, data):\n    for step, batch in enumerate(data):\n        loss = model(batch)\n        loss.backward()\n
int main(int argc, char** argv) {\n  std::vector<int32_t> ids;\n  return 0;\n}\n
Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир! Это тест токенизатора.
我们的模型在这里训练。你好，世界！今天天气很好。机器学习和自然语言处理。
Grüße aus München — naïve café, déjà vu, façade. Ελληνικά γράμματα. العربية. 日本語のテキスト。
Emoji: 😀 🚀 👍🏽 🇩🇪 ❤️ and symbols → ← ≤ ≥ ∑ ∫ √ ∞ ©.
"""

TEST_LINES = [
    "Hello world",
    "Hello, world! How are you doing today?",
    "It's a dog's life; they're sure we've met, I'm told he'll say I'd go.",
    "IT'S LOUD AND THEY'RE YELLING, WE'VE SEEN IT. It'S mixed 'S 'T.",
    "1 22 333 4444 55555 666666 1234567890 3.14159 -42 +7 1e10 0.000001",
    "In 2026, 1,234,567 people paid $12.50 each (≈ €11.40).",
    "def f(x):\n    return x * 2  # double\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) {\n        sum += a[i] * b[i];\n    }\n",
    "    leading spaces and trailing ones     ",
    "tabs\t\tand\t \tmixed \t whitespace\r\nwindows line\r\n\r\nend",
    "\n\n\nnewlines first\n",
    "a  b   c    d     e      f",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Москва — столица России; 2024 год. ЁЖИК в тумане!",
    "我们的模型在这里训练。你好，世界！",
    "日本語とEnglishのmix、そして한국어도。",
    "Emoji 😀😀 🚀 launch, family 👨‍👩‍👧‍👦, flag 🇩🇪, heart ❤️, skin tone 👍🏽.",
    "Ελληνικά, العربية, עברית, हिन्दी, ไทย.",
    "Grüße aus München — naïve café, déjà vu.",
    "e\u0301 decomposed and \u00e9 composed; Å vs A\u030a; ﬁ ligature; Ｆｕｌｌｗｉｄｔｈ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "text<|endoftext|>more text<|endoftext|><|endoftext|>",
    "<|im_start|><|im_end|> <|im_start <|im_end| <|endoftext| <|im_", 
    "almost special: < |im_start|> and <|IM_START|>",
    "a zyzzyva, zyzzyvas and zyzzy va",
    "!!!??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) {{{ }}}",
    "'''\"\"\"``` '' \"\" ``",
    "x" * 300,
    " " * 40 + "indented",
    "\u00a0non-breaking\u00a0spaces\u2003em\u2009thin\u3000ideographic",
    "",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "control \x01\x02\x1b[31mred\x1b[0m \x7f",
]


def bytes_to_unicode():
    """GPT-2's table: printable bytes stand for themselves, the others move to U+0100 and up."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pre_tokenize(pattern, text):
    """Matches and the text between them (Hugging Face's "Isolated" split)."""
    pieces, done = [], 0
    for m in regex.finditer(pattern, text):
        if m.start() > done:
            pieces.append(text[done:m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        done = m.end()
    if done < len(text):
        pieces.append(text[done:])
    return pieces


def mapped(piece):
    return "".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))


def train(text, pattern, merges_wanted):
    """Byte-level BPE training by counting adjacent pairs (ties: the largest pair, for determinism)."""
    words = collections.Counter(tuple(mapped(p)) for p in pre_tokenize(pattern, text))
    merges = []
    for _ in range(merges_wanted):
        pairs = collections.Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[a, b] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged = collections.Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


class Reference:
    """GPT-2 encoder.py's algorithm, plus added tokens, ignore_merges and NFC."""

    def __init__(self, vocab, merges, added, pattern, ignore_merges=False, nfc=False):
        self.vocab = vocab
        self.ranks = {m: i for i, m in enumerate(merges)}  # a merge listed twice: its last rank
        self.added = dict(added)
        self.pattern = pattern
        self.ignore_merges = ignore_merges
        self.nfc = nfc
        alternatives = sorted(self.added, key=len, reverse=True)
        self.added_re = regex.compile("(" + "|".join(regex.escape(a) for a in alternatives) + ")")

    def bpe(self, word):
        if self.ignore_merges and word in self.vocab:
            return [word]
        parts = list(word)
        while len(parts) > 1:
            pairs = set(zip(parts, parts[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        return parts

    def encode(self, text):
        ids = []
        for k, segment in enumerate(self.added_re.split(text)):
            if k % 2 == 1:
                ids.append(self.added[segment])
                continue
            if self.nfc:
                segment = unicodedata.normalize("NFC", segment)
            for piece in pre_tokenize(self.pattern, segment):
                ids.extend(self.vocab[p] for p in self.bpe(mapped(piece)))
        return ids


def make_tokenizer(shape, corpus, merges_wanted):
    pattern = {"gpt2": GPT2, "llama3": LLAMA3, "qwen2": QWEN2}[shape]
    merges = train(corpus, pattern, merges_wanted)
    vocab = {}
    for b in sorted(BYTE_TO_CHAR):  # byte order, not GPT-2's: ids are the file's business
        vocab[BYTE_TO_CHAR[b]] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    # A piece no merge makes: with ignore_merges (Llama-3) the word is that one token anyway.
    vocab.setdefault(mapped(" zyzzyva"), len(vocab))
    if shape == "gpt2":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        added = {}
        for s in specials:  # GPT-2 keeps its special token in model.vocab too
            vocab[s] = len(vocab)
            added[s] = vocab[s]
    else:
        specials = ["<|begin_of_text|>", "<|end_of_text|>" if shape == "llama3" else "<|endoftext|>",
                    "<|im_start|>", "<|im_end|>"]
        added = {s: len(vocab) + i for i, s in enumerate(specials)}
    model = {
        "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
        "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
        "ignore_merges": shape != "gpt2", "vocab": vocab,
        "merges": [f"{a} {b}" for a, b in merges] if shape == "gpt2" else [[a, b] for a, b in merges],
    }
    if shape == "gpt2":
        pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    doc = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for s, i in added.items()],
        "normalizer": {"type": "NFC"} if shape == "qwen2" else None,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": model,
    }
    ref = Reference(vocab, merges, added, pattern, ignore_merges=shape != "gpt2", nfc=shape == "qwen2")
    return doc, ref


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loom", required=True, help="the loom binary")
    parser.add_argument("--source-dir", required=True, help="the repository (its docs and code join the corpora)")
    parser.add_argument("--merges", type=int, default=600)
    parser.add_argument("--keep", help="write the tokenizer.json files into this directory")
    args = parser.parse_args()

    def read(rel):
        with open(os.path.join(args.source_dir, rel), encoding="utf-8") as f:
            return f.read()

    # Numbers and contractions in quantity, so that merges exist across digit groups and after
    # apostrophes, where the patterns differ.
    numbers = " ".join(str(i * i * 7) for i in range(1500)) + " " + " ".join(f"{i}.{i % 97}" for i in range(300))
    contractions = " ".join(f"{w}'{c} {w.upper()}'{c.upper()}" for w in ("it", "they", "we", "you", "she")
                            for c in ("s", "t", "re", "ve", "m", "ll", "d")) * 20
    corpus = TRAINING + numbers + contractions + read("data/README.md") + read("data/prepare.cc")
    # Test lines: the fixed ones, and lines of files the merges were not trained on.
    lines = list(TEST_LINES)
    for rel in ("data/chat.cc", "docs/plan-reference.md"):
        text = read(rel)
        lines += [text[i:i + 700] for i in range(0, min(len(text), 14000), 700)]

    # Every code point's Unicode class as the pattern sees it (\p{L}, \p{N}, \s; ICU in Loom,
    # `regex` here): each in a few contexts, all of them below U+3000 and a sample above.
    sweep = [c for c in range(1, 0x3000) if c != 0x0A] + list(range(0x3000, 0x30000, 11))
    sweep = [c for c in sweep if not 0xD800 <= c < 0xE000]
    for k in range(0, len(sweep), 32):
        lines.append("".join(f"a{chr(c)} b{chr(c)}{chr(c)}1 {chr(c)}" for c in sweep[k:k + 32]))

    failures = 0
    out_dir = args.keep or tempfile.mkdtemp(prefix="loom-bpe-")
    os.makedirs(out_dir, exist_ok=True)
    for shape in ("gpt2", "llama3", "qwen2"):
        doc, ref = make_tokenizer(shape, corpus, args.merges)
        path = os.path.join(out_dir, f"{shape}.tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
        stdin = "".join(json.dumps(line) + "\n" for line in lines)
        run = subprocess.run([args.loom, "data", "tokenize", "--tokenizer", path, "--jsonl"], input=stdin.encode(),
                             capture_output=True, timeout=120)
        if run.returncode != 0:
            print(f"FAIL {shape}: loom exited {run.returncode}: {run.stderr.decode(errors='replace')}")
            failures += 1
            continue
        got = [json.loads(l) for l in run.stdout.decode().splitlines()]
        if len(got) != len(lines):
            print(f"FAIL {shape}: {len(got)} outputs for {len(lines)} lines")
            failures += 1
            continue
        tokens = 0
        for line, result in zip(lines, got):
            want = ref.encode(line)
            tokens += len(want)
            if result["ids"] != want:
                failures += 1
                first = next((i for i, (a, b) in enumerate(zip(want, result["ids"])) if a != b),
                             min(len(want), len(result["ids"])))
                print(f"FAIL {shape}: {line[:60]!r}: ids differ from position {first}:\n"
                      f"  python {want[max(0, first - 3):first + 5]}\n  loom   {result['ids'][max(0, first - 3):first + 5]}")
            # NFC changes decomposed text, so Qwen2's decode is the normalised text there.
            if not result["roundtrip"] and not (shape == "qwen2" and unicodedata.normalize("NFC", line) != line):
                failures += 1
                print(f"FAIL {shape}: {line[:60]!r}: Decode(Encode(x)) != x")
        merges = len(doc["model"]["merges"])
        print(f"{shape}: {len(lines)} lines, {tokens} tokens, {merges} merges, vocab {len(doc['model']['vocab'])}: "
              f"{'ok' if failures == 0 else 'FAILED'}")
    if failures:
        print(f"{failures} failure(s); tokenizer.json files in {out_dir}")
        return 1
    if not args.keep:
        for name in os.listdir(out_dir):
            os.remove(os.path.join(out_dir, name))
        os.rmdir(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
