#!/usr/bin/python3
"""hf_parity.py: dev-only parity check of a Hugging Face export against `moetrain logits`.

Reads OUR export directory (config.json + model.safetensors or shards + index) with its own
minimal safetensors parser, runs an independent Mixtral / Llama forward in torch written from
the Hugging Face modelling code's definitions (RMSNorm, rotate-half RoPE, GQA causal
attention with the optional sliding window, softmax -> top-k -> renormalise router, SwiGLU
experts), and compares the logits
with the float32 file written by `moetrain logits MODEL --ids ... --out FILE`.

Not part of the test suite (needs Debian's python3-torch: apt-get install -y python3-torch).

usage: tools/hf_parity.py HF_DIR LOGITS.f32 --ids 1,2,3 [--tol 1e-4]
exit 0 when max |torch - moetrain| <= tol, 1 otherwise.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, t = e["data_offsets"]
        raw = buf[base + b:base + t]
        if e["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(DTYPES[e["dtype"]][0]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(e["shape"]).copy())
    return out


def read_model(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for fn in files:
        w.update(read_safetensors(os.path.join(d, fn)))
    return w


def rmsnorm(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def rope(x, theta, D):
    # x (T, heads, D); rotate-half pairs (i, i + D/2), HF Llama/Mixtral convention.
    T = x.shape[0]
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).float()[:, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1).float()[:, None, :]
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    rot = torch.cat([-x2, x1], -1)
    return x * cos + rot * sin


def forward(cfg, w, ids):
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim", C // H)
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    moe = cfg["model_type"] == "mixtral"
    E, K = cfg.get("num_local_experts", 0), cfg.get("num_experts_per_tok", 0)
    T = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf")).triu(1)
    W = cfg.get("sliding_window") or 0
    if W > 0:   # Mistral / HF sliding window: query t sees keys s with t - W < s <= t
        mask = mask + torch.full((T, T), float("-inf")).tril(-W)
    for l in range(L):
        p = "model.layers.%d." % l
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, H, D)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, Hkv, D)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, Hkv, D)
        q, k = rope(q, theta, D), rope(k, theta, D)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / (D ** 0.5) + mask
        o = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, H * D)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        if moe:
            pm = p + "block_sparse_moe."
            probs = (h @ w[pm + "gate.weight"].T).softmax(-1)
            top, idx = probs.topk(K, dim=-1)
            top = top / top.sum(-1, keepdim=True)
            y = torch.zeros_like(h)
            for e in range(E):
                pe = pm + "experts.%d." % e
                for kk in range(K):
                    sel = idx[:, kk] == e
                    if sel.any():
                        he = h[sel]
                        ye = (torch.nn.functional.silu(he @ w[pe + "w1.weight"].T) *
                              (he @ w[pe + "w3.weight"].T)) @ w[pe + "w2.weight"].T
                        y[sel] += top[sel, kk:kk + 1] * ye
        else:
            pm = p + "mlp."
            y = (torch.nn.functional.silu(h @ w[pm + "gate_proj.weight"].T) *
                 (h @ w[pm + "up_proj.weight"].T)) @ w[pm + "down_proj.weight"].T
        x = x + y
    x = rmsnorm(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("logits")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with open(os.path.join(a.hf_dir, "config.json")) as f:
        cfg = json.load(f)
    ids = [int(s) for s in a.ids.split(",")]
    w = read_model(a.hf_dir)
    with torch.no_grad():
        ref = forward(cfg, w, ids).numpy()
    ours = np.fromfile(a.logits, dtype="<f4").reshape(len(ids), cfg["vocab_size"])
    diff = np.abs(ref - ours)
    print("positions %d, vocab %d, max |logit| %.4f, max abs diff %.3e, mean abs diff %.3e, "
          "argmax agree %d/%d" % (len(ids), cfg["vocab_size"], np.abs(ref).max(), diff.max(),
                                  diff.mean(), int((ref.argmax(-1) == ours.argmax(-1)).sum()),
                                  len(ids)))
    ok = diff.max() <= a.tol
    print("PASS" if ok else "FAIL", "(tol %g)" % a.tol)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
