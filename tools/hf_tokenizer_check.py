#!/usr/bin/env python3
"""hf_tokenizer_check.py: cross-check moetrain's tokenizer.json encoding against a second,
independent implementation (dev-only; no test or build runs this, and nothing needs it).

The reference here follows the Hugging Face `tokenizers` BPE model as documented: the
pre-tokenizer's regex run by the `regex` module (a real regex engine, with the Unicode
White_Space meaning of \\s that Oniguruma also uses), each piece's bytes written in GPT-2's
byte-to-unicode alphabet, ignore_merges (a piece that is a vocabulary token is that token),
then BPE by merge rank, naively: repeatedly merge the lowest-ranked adjacent pair, leftmost
first. If the `tokenizers` package happens to be installed it is used as well.

    python3 tools/hf_tokenizer_check.py build/moetrain TOKENIZER.json TEXT_FILE...

For each text file: encodes it with `moetrain tokenizer encode` and with the reference,
prints "same N ids" or the first differing position with context; exit 1 on a difference.
Needs the `regex` module (pip package "regex"; Debian python3-regex).
"""
import json
import subprocess
import sys

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_alphabet():
    """GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256 + k."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0x100))
    cs = bs[:]
    k = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def pattern_of(tj):
    pt = tj["pre_tokenizer"]
    if pt["type"] == "ByteLevel":
        return GPT2_PATTERN
    parts = pt["pretokenizers"]
    if parts[0]["type"] == "ByteLevel":
        return GPT2_PATTERN
    return parts[0]["pattern"]["Regex"]


class Reference:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        model = tj["model"]
        self.vocab = model["vocab"]
        self.ignore_merges = bool(model.get("ignore_merges"))
        self.ranks = {}
        for r, m in enumerate(model["merges"]):
            a, b = m.split(" ") if isinstance(m, str) else m
            self.ranks[(a, b)] = r          # a repeated pair keeps its last rank
        self.pattern = regex.compile(pattern_of(tj))
        self.alpha = byte_alphabet()
        self.cache = {}

    def bpe(self, word):
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        syms = list(word)
        while len(syms) > 1:
            best, at = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            syms[at:at + 2] = [syms[at] + syms[at + 1]]
        return [self.vocab[s] for s in syms]

    def encode(self, text):
        ids = []
        for piece in self.pattern.findall(text):
            word = "".join(self.alpha[b] for b in piece.encode("utf-8"))
            if word not in self.cache:
                self.cache[word] = self.bpe(word)
            ids.extend(self.cache[word])
        return ids


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    moetrain, tok_path, texts = sys.argv[1], sys.argv[2], sys.argv[3:]
    ref = Reference(tok_path)
    try:
        import tokenizers  # noqa: F401  (optional third implementation)
        hf = tokenizers.Tokenizer.from_file(tok_path)
    except ImportError:
        hf = None
    bad = 0
    for path in texts:
        with open(path, encoding="utf-8", newline="") as f:  # keep \r as it is
            text = f.read()
        out = subprocess.run([moetrain, "tokenizer", "encode", "--tokenizer", tok_path, path],
                             check=True, capture_output=True, text=True).stdout.split()
        ours = [int(x) for x in out]
        theirs = ref.encode(text)
        others = [("reference", theirs)]
        if hf is not None:
            others.append(("tokenizers", hf.encode(text, add_special_tokens=False).ids))
        for name, ids in others:
            if ids == ours:
                print(f"{path}: same {len(ours)} ids as the {name}")
                continue
            bad = 1
            i = next((k for k in range(min(len(ids), len(ours))) if ids[k] != ours[k]),
                     min(len(ids), len(ours)))
            print(f"{path}: differs from the {name} at id {i} (moetrain {len(ours)} ids, "
                  f"{name} {len(ids)}): moetrain {ours[max(0, i - 3):i + 4]}, "
                  f"{name} {ids[max(0, i - 3):i + 4]}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
