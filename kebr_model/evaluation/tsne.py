"""t-SNE maps of pooled features (KEBR Fig. 6): one panel per feature set (text, audio, visual,
fused), each clip a point coloured by its sentiment label, to see which representation separates
positive from negative clips.

`pooled_features` collects the clip vectors from a model whose fusion is one of `kebr_model.fusions`
(a forward hook on the `Fusion` module: `per_modality[m]` and `pooled`); `plot_tsne` takes any
arrays, so that features from elsewhere can be drawn the same way. A modality whose vectors are the
same for every clip (the shards lack it, as visual features on a pip install without OpenFace) is left
out and named in the title: scikit-learn's t-SNE crashes on a constant block.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kebr_data.errors import KebrError

PANELS = ("text", "audio", "visual", "fused")
MODALITIES = PANELS[:3]


class FeatureError(KebrError, ValueError):
    """Features that cannot be drawn (too few clips, mismatched rows, no fusion module)."""


def embed(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(n, d) -> (n, 2) with scikit-learn's TSNE (PCA initialisation, fixed seed). The perplexity
    is capped at (n - 1) / 3, which scikit-learn's neighbour search needs (it must be below n); a
    constant block is refused."""
    from kebr_data.deps import require

    TSNE = require("sklearn.manifold", "train", "the t-SNE plot (scikit-learn)").TSNE
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise FeatureError(f"t-SNE needs an (n, d) array with n >= 3 clips, got shape {x.shape}")
    if np.all(x == x[:1]):  # scikit-learn's Barnes-Hut t-SNE would die with a segmentation fault
        raise FeatureError("t-SNE cannot embed a constant block (the same vector for every clip): leave it out")
    p = min(float(perplexity), (len(x) - 1) / 3)
    return TSNE(n_components=2, perplexity=p, init="pca", random_state=seed).fit_transform(x)


def drawable(features: dict[str, np.ndarray]) -> tuple[list[str], dict[str, str]]:
    """The feature sets to embed (PANELS order, then any others), and why each other one is left out:
    `constant` (every clip the same vector: a modality the shards lack, e.g. visual without OpenFace;
    scikit-learn's Barnes-Hut t-SNE dies with a segmentation fault on it) or, for a modality, `absent`."""
    names = [n for n in PANELS if n in features] + [n for n in features if n not in PANELS]
    constant = {n: "constant" for n in names if len(features[n]) and np.all(features[n] == features[n][:1])}
    absent = {m: "absent" for m in MODALITIES if m not in features}
    return [n for n in names if n not in constant], {**absent, **constant}


def caption(title: str, left_out: dict[str, str]) -> str:
    """The plot's title, with a line naming the feature sets left out of the embedding and why."""
    note = "left out: " + ", ".join(f"{n} ({why})" for n, why in left_out.items()) if left_out else ""
    return "\n".join(t for t in (title, note) if t)


def plot_tsne(features: dict[str, np.ndarray], labels: np.ndarray, path: Path, seed: int = 0,
              perplexity: float = 30.0, title: str = "") -> dict[str, np.ndarray]:
    """Write a PNG with one t-SNE panel per feature set (in PANELS order, then any others), points
    coloured by label (diverging colour map centred on 0: negative blue, positive red); constant and
    absent modalities are left out and named in the title (`drawable`). Returns the 2-D embeddings by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    y = np.asarray(labels, dtype=np.float64)
    for n in features:
        if len(features[n]) != len(y):
            raise FeatureError(f"{n}: {len(features[n])} rows for {len(y)} labels")
    names, left_out = drawable({n: np.asarray(v) for n, v in features.items()})
    if not names:
        raise FeatureError("plot_tsne needs a feature set that varies across clips"
                           + (f" ({caption('', left_out)})" if left_out else ""))
    maps = {n: embed(features[n], seed, perplexity) for n in names}
    bound = max(float(np.abs(y).max()), 1e-6)
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1.0, 3.6), squeeze=False,
                             layout="constrained")
    for ax, n in zip(axes[0], names):
        points = ax.scatter(maps[n][:, 0], maps[n][:, 1], c=y, cmap="coolwarm", norm=norm, s=12)
        ax.set(title=f"{n} ({features[n].shape[1]}-d)", xticks=[], yticks=[])
    fig.colorbar(points, ax=axes[0].tolist(), label="label", shrink=0.8)
    if title or left_out:
        fig.suptitle(caption(title, left_out))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return maps


def pooled_features(model: Any, batches: Iterable[dict[str, Any]], forward: Any) -> tuple[dict[str, np.ndarray],
                                                                                           np.ndarray]:
    """Run `forward(batch)` over `batches` with a hook on the model's fusion module and gather clip
    vectors: text/audio/visual (the fusion's inputs, masked means: its `per_modality`) and fused (its pooled
    output), plus the labels."""
    import torch

    from ..fusions import Fusion

    fusion = next((m for m in model.modules() if isinstance(m, Fusion)), None)
    if fusion is None:
        raise FeatureError("the model has no fusion module (kebr_model.fusions): no pooled features to collect")
    seen: dict[str, list[np.ndarray]] = {}

    def keep(name: str, value: torch.Tensor) -> None:
        seen.setdefault(name, []).append(value.detach().float().cpu().numpy())

    def on_fusion(_module: Any, _inputs: Any, output: Any) -> None:
        for name, value in {**output.per_modality, "fused": output.pooled}.items():
            keep(name, value)

    handle = fusion.register_forward_hook(on_fusion)
    labels = []
    try:
        with torch.no_grad():
            for batch in batches:
                forward(batch)
                labels.append(np.asarray(batch["label"].float().cpu()))
    finally:
        handle.remove()
    return {n: np.concatenate(v) for n, v in seen.items()}, np.concatenate(labels) if labels else np.zeros(0)
