"""Build a transformers WhisperModel folder from the bundled tiny.en CTranslate2 weights (through
`ct2_to_whisper`'s openai-whisper state dict), so the ssl_audio stage is tested on a real Whisper
encoder without downloading anything. The name mapping is the one of transformers' own
openai-to-HF conversion (removed from transformers 5): blocks -> layers, attn -> self_attn
(query/key/value/out -> q/k/v/out_proj), cross_attn -> encoder_attn, mlp.0/2 -> fc1/fc2,
*_ln -> *_layer_norm, ln_post/ln -> layer_norm.
"""

from __future__ import annotations

import re
from pathlib import Path

RENAMES = [
    (r"\.blocks\.", ".layers."), (r"\.attn\.query\.", ".self_attn.q_proj."), (r"\.attn\.key\.", ".self_attn.k_proj."),
    (r"\.attn\.value\.", ".self_attn.v_proj."), (r"\.attn\.out\.", ".self_attn.out_proj."),
    (r"\.cross_attn\.query\.", ".encoder_attn.q_proj."), (r"\.cross_attn\.key\.", ".encoder_attn.k_proj."),
    (r"\.cross_attn\.value\.", ".encoder_attn.v_proj."), (r"\.cross_attn\.out\.", ".encoder_attn.out_proj."),
    (r"\.attn_ln\.", ".self_attn_layer_norm."), (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
    (r"\.mlp_ln\.", ".final_layer_norm."), (r"\.mlp\.0\.", ".fc1."), (r"\.mlp\.2\.", ".fc2."),
    (r"^encoder\.ln_post\.", "encoder.layer_norm."), (r"^decoder\.ln\.", "decoder.layer_norm."),
    (r"^encoder\.positional_embedding$", "encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "decoder.embed_tokens."),
]


def convert(ct2_dir: Path, dest: Path) -> Path:
    """Write `dest` (config.json, model.safetensors, preprocessor_config.json) for the CTranslate2 Whisper in `ct2_dir`."""
    import torch
    from ct2_to_whisper import convert as to_openai
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    ckpt = torch.load(to_openai(ct2_dir, dest.parent / "openai.pt"), weights_only=True)
    d = ckpt["dims"]
    cfg = WhisperConfig(vocab_size=d["n_vocab"], num_mel_bins=d["n_mels"], d_model=d["n_audio_state"],
                        encoder_layers=d["n_audio_layer"], encoder_attention_heads=d["n_audio_head"],
                        decoder_layers=d["n_text_layer"], decoder_attention_heads=d["n_text_head"],
                        encoder_ffn_dim=4 * d["n_audio_state"], decoder_ffn_dim=4 * d["n_text_state"],
                        max_source_positions=d["n_audio_ctx"], max_target_positions=d["n_text_ctx"])
    state = {}
    for name, value in ckpt["model_state_dict"].items():
        for pattern, repl in RENAMES:
            name = re.sub(pattern, repl, name)
        state[name] = value
    model = WhisperModel(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.endswith("k_proj.bias")]:
        raise ValueError(f"unmapped weights: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(dest)
    WhisperFeatureExtractor(feature_size=d["n_mels"]).save_pretrained(dest)
    return dest
