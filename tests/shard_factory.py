"""Write kebr-data shards directly in the stage-table format (plan, mask, acoustic, visual tables plus
markers, optionally the audio stage's FLAC), for trainer tests that should not wait on the extraction stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kebr_data.media.flac import encode_flac
from kebr_data.schema import ACOUSTIC, AUDIO, MASK, PLAN, VISUAL
from kebr_data.storage.commit import commit_plan_marker, commit_rows
from kebr_data.storage.layout import OutputDir

WORDS = ["I", "really", "think", "this", "movie", "was", "quite", "something", "today", "for", "us"]
SENTIMENT = {"love": 2.4, "great": 2.325, "good": 1.425, "bad": -1.875, "awful": -1.5, "hate": -2.025}


def make_shards(root: Path, n: int = 16, shard_size: int = 8, seed: int = 0, labelled: bool = False,
                visual: bool = True, widths: tuple[int, int] = (33, 709),
                stages: tuple[str, str] = ("acoustic", "visual"), sims: bool = False, audio: bool = False,
                poison: str = "", extra: dict[str, int] | None = None, textless: str = "") -> Path:
    """n clips: a sentence with one sentiment word (masked), audio and visual frames whose statistics
    carry the label, and for `labelled`, an utterance label and train/valid/test splits. `widths` and
    `stages` give the frame widths and stage names of the two modalities; `sims` scales labels to
    [-1, 1] and adds per-modality labels (label_t/a/v) as CH-SIMS has them. `audio` adds the audio
    stage: 0.3-1 s of a tone whose pitch follows the label at 22,050 Hz as FLAC (every 7th clip none).
    The acoustic frames of clip `poison` start with -inf, as an extractor's log of zero energy writes.
    `extra` adds more frame stages (name -> width, e.g. ssl_audio and video_encoder), frames carrying the label.
    Clip `textless` has no transcript: no given text, its mask row skipped (empty_text)."""
    from kebr_data.mmsa_import import with_width

    a_schema, v_schema = with_width(ACOUSTIC, widths[0]), with_width(VISUAL, widths[1])
    rng = np.random.default_rng(seed)
    out = OutputDir(root)
    root.mkdir(parents=True, exist_ok=True)
    shards = {}
    names = list(SENTIMENT)
    for s in range(0, n, shard_size):
        k = s // shard_size
        plan, mask, acoustic, vis, waves = [], [], [], [], []
        more: dict[str, list] = {name: [] for name in extra or {}}
        for i in range(s, min(n, s + shard_size)):
            cid = f"clip{i:04d}"
            word = names[i % len(names)]
            label = SENTIMENT[word] / (2.4 if sims else 1.0)
            pos = int(rng.integers(0, 5))
            words = list(rng.choice(WORDS, size=6))
            words.insert(pos, word)
            text = " ".join(words)
            masked = " ".join(words[:pos] + ["[MASK]"] + words[pos + 1:])
            split = ("train", "train", "train", "valid", "test")[i % 5] if labelled else None
            per_modality = {f"label_{m}": round(label * f, 4) for m, f in zip("tav", (0.8, 1.0, 0.6))} \
                if sims and labelled else {}
            plan.append({"clip_id": cid, "status": "ok", "split": split, "label": label if labelled else None,
                         "given_text": text if labelled else None, "source": "manifest", **per_modality})
            mask.append({"clip_id": cid, "status": "ok", "text": text, "masked_text": masked, "words": words,
                         "mask_index": pos, "mask_word": word, "vader_score": label / 0.75, "label": label,
                         "has_sentiment_word": True, "lexicon": "vader"} if cid != textless else
                        {"clip_id": cid, "status": "skipped", "error": "empty_text"})
            if cid == textless:
                plan[-1]["given_text"] = None
            ta, tv = int(rng.integers(20, 60)), int(rng.integers(5, 20))
            frames = (rng.standard_normal((ta, widths[0])) + label).astype(np.float32)
            if cid == poison:
                frames[0, 0] = -np.inf
            acoustic.append({"clip_id": cid, "status": "ok", "recipe": "released", "frame_rate": 43.07,
                             "num_frames": ta, "features": frames})
            v = (rng.standard_normal((tv, widths[1])) * 0.1 + label).astype(np.float32)
            vis.append({"clip_id": cid, "status": "ok" if visual else "skipped", "backend": "openface", "fps": 25.0,
                        "num_frames": tv if visual else None, "features": v if visual else None,
                        "success": np.ones(tv, bool) if visual else None,
                        "confidence": np.ones(tv, np.float32) if visual else None, "face_ratio": 1.0})
            for j, (name, width) in enumerate((extra or {}).items()):  # own generators: other tables unchanged
                frames = np.random.default_rng([seed, i, 1 + j]).standard_normal((tv + j, width)) + label
                more[name].append({"clip_id": cid, "status": "ok", "recipe": "released", "frame_rate": 50.0,
                                   "num_frames": tv + j, "features": frames.astype(np.float32)})
            if audio:  # its own generator, so the other tables are the same with or without `audio`
                seconds = float(np.random.default_rng([seed, i]).uniform(0.3, 1.0))
                waves.append(_audio_row(cid, label, seconds, i % 7 == 6))
        shards[f"{k:05d}"] = commit_rows(out, "plan", k, plan, PLAN, "test")
        tables = [("mask", MASK, mask), (stages[0], a_schema, acoustic), (stages[1], v_schema, vis),
                  *((name, with_width(ACOUSTIC, w), more[name]) for name, w in (extra or {}).items())]
        for stage, schema, rows in tables + ([("audio", AUDIO, waves)] if audio else []):
            commit_rows(out, stage, k, rows, schema, "test", shards[f"{k:05d}"]["sha256"])
    commit_plan_marker(out, shards, "synthetic", shard_size)
    return root


def _audio_row(cid: str, label: float, seconds: float, silent: bool, sr: int = 22050) -> dict:
    """An audio stage row: a tone at 200 + 40·label Hz with some noise, or `skipped` (no audio track)."""
    if silent:
        return {"clip_id": cid, "status": "skipped", "error": "no_audio_track"}
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(int(cid.removeprefix("clip"))).standard_normal(len(t))
    y = 0.3 * np.sin(2 * np.pi * (200 + 40 * label) * t) + 0.02 * noise
    return {"clip_id": cid, "status": "ok", "sample_rate": sr, "num_samples": len(t), "duration_s": seconds,
            "flac": encode_flac((y * 32767).astype(np.int16), sr)}
