#!/usr/bin/env python3
"""make_corpus.py: (re)writes the seed corpora under tests/fuzz/corpus/<target>/.

Seeds are small valid (or nearly valid) inputs for each target so the fuzzers start from the
formats' interesting parts; crash inputs found later are added by hand as crash-<what>.
Run from anywhere: python3 tests/fuzz/make_corpus.py
"""
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


# ---- config: the shipped configs, an empty section, flow lists, --set overrides after NUL
put("config", "mixtral_tiny.yaml", read("configs/mixtral_tiny.yaml"))
put("config", "dense_tiny.yaml", read("configs/dense_tiny.yaml"))
put("config", "lora_tiny.yaml", read("configs/lora_tiny.yaml"))
put("config", "small.yaml",
    "model:\n  dim: 8\n  head_dim: 4\nmoe:\ndata:\n  tokenizer: \"t.bpe\"\n"
    "  text: [a.txt, 'b c.txt']\n  shards:\n    - s.tok\nrun:\n  dir: \"r\\x01\\u00e9\"\n")
put("config", "sets.yaml",
    "data:\n  tokenizer: t.bpe\n  text: [a.txt]\n\0model.dim=16\ndata.text=[x, y]\n"
    "moe.router_noise=false\noptim.lr=1e-3\nrun.dir=\"q\"\n")
put("config", "bad.yaml", "model: {dim: 1.5, dim: 2}\n---\nmoe: [1]\n")

# ---- sft: option byte + JSONL records (pairs, conversations, custom fields, bad lines)
put("sft", "pairs.jsonl", b"\x00" + b'{"prompt": "What is 2 + 3?", "completion": " 5"}\n\n'
    b'{"prompt": "a", "completion": "b", "id": 7}\r\n')
put("sft", "gsm8k.jsonl", b"\x03" + b"\n".join(read("data/gsm8k_train.jsonl").split(b"\n")[:2]))
put("sft", "chat.jsonl", b"\x00" + b'{"messages": [{"role": "system", "content": "Be brief."}, '
    b'{"role": "user", "content": "Hi <|endoftext|>"}, {"role": "assistant", "content": "Hello"}, '
    b'{"role": "user", "content": "bye"}]}\n')
put("sft", "bad.jsonl", b"\x00" + b'{"prompt": "a", "completion": "b"}\n{"messages": '
    b'[{"role": "tool", "content": 1}]}\n')

# ---- json: real metrics / eval lines and the extensions
m = read("tests/train/fixtures/mixtral_tiny/metrics.jsonl").split(b"\n")
put("json", "metrics.json", m[0])
put("json", "eval.json", read("tests/train/fixtures/mixtral_tiny/eval.jsonl").split(b"\n")[0])
put("json", "escapes.json", '{"s": "a\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00", "n": [0, -1.5e-3, 1E10]}')
put("json", "nonfinite.json", '{"loss": nan, "x": -inf, "y": Infinity, "z": [null, true, false, {}]}')

# ---- shard: header (magic, version, V, n, hash) + uint16 ids
def shard(ids, vocab=300, n=None, magic=b"MOETOK1\0", version=1):
    n = len(ids) if n is None else n
    return magic + struct.pack("<IIQQ", version, vocab, n, 0x1234) + struct.pack("<%dH" % len(ids), *ids)

put("shard", "valid", shard([0, 1, 299, 256, 17]))
put("shard", "empty", shard([]))
put("shard", "bad_id", shard([0, 300]))
put("shard", "truncated", shard([1, 2, 3], n=4))

# format 2: 40-byte header (+ width, reserved), ids of 2 or 4 bytes
def shard2(ids, vocab=300, n=None, width=None, reserved=0):
    n = len(ids) if n is None else n
    width = (2 if vocab <= 65536 else 4) if width is None else width
    head = b"MOETOK1\0" + struct.pack("<IIQQII", 2, vocab, n, 0x1234, width, reserved)
    return head + struct.pack("<%d%s" % (len(ids), "H" if width == 2 else "I"), *ids)

put("shard", "v2_valid16", shard2([0, 1, 299, 256, 17]))
put("shard", "v2_valid32", shard2([0, 70000, 199999, 65536, 3], vocab=200000))
put("shard", "v2_bad_id32", shard2([0, 200000], vocab=200000))
put("shard", "v2_bad_width", shard2([1, 2], width=4))

# ---- tokenizer: mode byte + payload (see fuzz_tokenizer.c)
lines = read("data/tokenizer_4096.bpe").split(b"\n")
merges = lines[4:4 + 40]
tok = b"moetrain-bpe 1\nvocab_size %d\nspecial %d <|endoftext|>\nmerges %d\n" % (
    257 + len(merges), 256 + len(merges), len(merges)) + b"\n".join(merges) + b"\n"
put("tokenizer", "file_valid", b"\0" + tok)
put("tokenizer", "file_dup", b"\0" + tok.replace(merges[1], merges[0]))
text = read("data/tinyshakespeare.txt")[:400] + "Grüße 東京 🙂 it's 3.14\t\r\n".encode()
put("tokenizer", "encode_text", b"\1" + text)
put("tokenizer", "decode_ids", b"\2" + struct.pack("<8i", 0, 1, 255, 256, 299, -1, 1 << 30, 65))
put("tokenizer", "train_text", b"\3\x20" + text[:300])

# ---- tokenizer_json: mode byte + payload (see fuzz_tokenizer_json.c)
tj = read("tests/data/fixtures/tiny_llama3.json")
put("tokenizer_json", "fixture_llama3", b"\0" + tj)
put("tokenizer_json", "fixture_qwen2", b"\0" + tj.replace(b"\\p{N}{1,3}", b"\\p{N}"))
put("tokenizer_json", "fixture_bad_pattern", b"\0" + tj.replace(b"\\p{N}{1,3}", b"\\p{N}{1,4}"))
put("tokenizer_json", "text", b"\1" + text + "IT'S 'll \u017f 12345\r\n\x1c \u00a0x\n".encode())

# ---- ckpt: edit lists (see fuzz_ckpt.c; byte 0 = load optimizer, then op, name, args...)
put("ckpt", "noop", b"\1")
put("ckpt", "attr_delete", b"\1\0\0\3")
put("ckpt", "attr_vector", b"\1\1\0\5\0\1\7" + bytes(range(64)))
put("ckpt", "attr_string", b"\0\1\0\0\4\0\x30\0moetrain-checkpoint")
put("ckpt", "attr_vlen", b"\0\1\0\x0b\5\1\3\4abcd\2xy\0")
put("ckpt", "dset_delete", b"\1\2\5")
put("ckpt", "dset_shape", b"\1\3\6\0\2\1\3\5" + bytes(64))
put("ckpt", "dset_huge", b"\0\3\0\2\1\3\xff")
put("ckpt", "dset_huge2", b"\0\3\7\0\2\1\xfe\xfe")
put("ckpt", "config_bytes", b"\1\4\0\x10model:\n  dim: 16\n" + bytes(100))
put("ckpt", "tokenizer_bytes", b"\1\5\0\x20" + tok[:200])
put("ckpt", "group", b"\1\6\3")
put("ckpt", "softlink", b"\1\7\4\1\7\2\2")

# ---- safetensors: u64 header length, JSON header, data
def safetensors(tensors, meta=None):
    import json
    hdr, data = {}, b""
    if meta:
        hdr["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data

put("safetensors", "two_tensors", safetensors([
    ("a.weight", "F32", [2, 3], struct.pack("<6f", 1, 2, 3, 4, 5, 6)),
    ("b", "F16", [4], struct.pack("<4H", 0x3c00, 0x8000, 0x7c00, 0x0001)),
    ("c", "BF16", [1, 2], struct.pack("<2H", 0x3f80, 0xff80))], meta={"format": "pt"}))
put("safetensors", "empty_tensor", safetensors([("z", "F32", [0, 5], b"")]))
put("safetensors", "scalar", safetensors([("s", "F32", [], struct.pack("<f", 7))]))

# ---- gguf v3: header, key/values, tensor infos, aligned data
def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s

def gguf(kvs, tensors, align=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, typ, val in kvs:
        out += gstr(key) + struct.pack("<I", typ) + val
    data = b""
    for name, ne, typ, raw in tensors:
        data += b"\0" * (-len(data) % align)
        out += gstr(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", typ, len(data))
        data += raw
    out += b"\0" * (-len(out) % align)
    return out + data

q8 = struct.pack("<H", 0x3c00) + bytes(range(32))
put("gguf", "small", gguf([
    ("general.architecture", 8, gstr("llama")),
    ("llama.block_count", 4, struct.pack("<I", 2)),
    ("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    ("general.alignment", 4, struct.pack("<I", 32)),
    ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + gstr("a") + gstr("<s>") + gstr("")),
    ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<2f", 0.5, -1)),
    ("flag", 7, b"\1"), ("big", 10, struct.pack("<Q", 1 << 40))],
    [("w", [3, 2], 0, struct.pack("<6f", 1, 2, 3, 4, 5, 6)),
     ("h", [4], 1, struct.pack("<4H", 0x3c00, 0, 0xbc00, 0x7bff)),
     ("q", [32], 8, q8)]))
put("gguf", "empty", gguf([], []))
