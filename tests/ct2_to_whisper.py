"""Rebuild an openai-whisper checkpoint from a CTranslate2 Whisper model (here: the bundled tiny.en),
so both ASR engines can be timed on the very same weights.

Reads CTranslate2's model.bin (format version 6: named float16 variables) and maps each to the
openai-whisper state dict: fused QKV and KV projections are split, CTranslate2's zero key bias is
dropped, layer norms' gamma/beta become weight/bias.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin (aliases resolved)."""
    with open(path, "rb") as f:
        def u32() -> int:
            return struct.unpack("<I", f.read(4))[0]

        def text() -> str:
            n = struct.unpack("<H", f.read(2))[0]
            return f.read(n).decode().rstrip("\0")

        if u32() != 6:
            raise ValueError("only CTranslate2 model format version 6 is supported")
        text(), u32()
        out = {}
        for _ in range(u32()):
            name = text()
            dims = [u32() for _ in range(f.read(1)[0])]
            dtype = DTYPES[f.read(1)[0]]
            data = f.read(u32())
            out[name] = np.frombuffer(data, dtype=dtype).reshape(dims)
        for _ in range(u32()):
            alias, target = text(), text()
            out[alias] = out[target]
    return out


def convert(model_dir: Path, dest: Path) -> Path:
    """Write an openai-whisper .pt for the CTranslate2 Whisper model in `model_dir`."""
    import torch

    v = read_ct2(model_dir / "model.bin")
    cfg = json.loads((model_dir / "config.json").read_text())
    n_state = v["encoder/conv1/bias"].shape[0]
    n_audio_layer = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
    n_text_layer = len({k.split("/")[1] for k in v if re.match(r"decoder/layer_\d+/", k)})
    sd: dict[str, np.ndarray] = {}

    def ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def lin(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/weight"], v[f"{src}/bias"]

    def qkv(dst: str, src: str) -> None:
        w, b = np.split(v[f"{src}/weight"], 3), np.split(v[f"{src}/bias"], 3)
        sd[f"{dst}.query.weight"], sd[f"{dst}.query.bias"] = w[0], b[0]
        sd[f"{dst}.key.weight"] = w[1]
        sd[f"{dst}.value.weight"], sd[f"{dst}.value.bias"] = w[2], b[2]

    def block(dst: str, src: str) -> None:
        """What encoder and decoder layers share: self-attention (fused QKV) and the MLP."""
        qkv(f"{dst}.attn", f"{src}/self_attention/linear_0")
        lin(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        lin(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        lin(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    for name in ("conv1", "conv2"):
        lin(f"encoder.{name}", f"encoder/{name}")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}")
    ln("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        block(dst, src)
        lin(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        kw, kb = np.split(v[f"{src}/attention/linear_1/weight"], 2), np.split(v[f"{src}/attention/linear_1/bias"], 2)
        sd[f"{dst}.cross_attn.key.weight"] = kw[0]
        sd[f"{dst}.cross_attn.value.weight"], sd[f"{dst}.cross_attn.value.bias"] = kw[1], kb[1]
        lin(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
    ln("decoder.ln", "decoder/layer_norm")
    dims = {"n_mels": v["encoder/conv1/weight"].shape[1], "n_audio_ctx": v["encoder/position_encodings/encodings"].shape[0],
            "n_audio_state": n_state, "n_audio_head": int(v["encoder/num_heads"]), "n_audio_layer": n_audio_layer,
            "n_vocab": v["decoder/embeddings/weight"].shape[0],
            "n_text_ctx": v["decoder/position_encodings/encodings"].shape[0], "n_text_state": n_state,
            "n_text_head": int(v["decoder/num_heads"]), "n_text_layer": n_text_layer}
    state = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in sd.items()}
    heads = cfg.get("alignment_heads")
    torch.save({"dims": dims, "model_state_dict": state}, dest)
    if heads:
        dest.with_suffix(".heads.json").write_text(json.dumps(heads))
    return dest
