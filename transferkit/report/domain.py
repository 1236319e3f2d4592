"""Pictures of a domain-adaptation run: t-SNE of source and target, and the proxy A-distance.

The representation is what the classifier's last layer reads (``Head.embed``), for at most
300 source-validation and 300 target samples.  "Before" is the model before adaptation
(after the ``source`` stage, or the pretrained features when there is none); "after" is the
model kept at the end.  The proxy A-distance (Ben-David et al. 2007) is 2 (1 - 2 err) of a
linear domain classifier: 0 when the domains cannot be told apart, 2 when they separate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..domain import proxy_a_distance
from ..io import save_with
from .plots import _plt


def domain_report(trainer, run_dir: Path, *, log: Callable[[str], None] = print,
                  figure: bool = True) -> dict[str, Any]:
    trainer.snapshot("after")
    snaps = {k: v for k, v in trainer.snapshots.items() if k in ("before", "after")}
    pad = {}
    for name, (z_s, z_t, _y) in snaps.items():
        try:
            pad[name] = round(float(proxy_a_distance(z_s, z_t, seed=trainer.cfg.seed)), 4)
        except Exception as exc:  # a degenerate representation must not lose the run
            log(f"proxy A-distance ({name}) not computed: {exc}")
    out: dict[str, Any] = {"proxy_a_distance": pad, "figures": []}
    if pad:
        log("proxy A-distance " + ", ".join(f"{k} {v:.3f}" for k, v in pad.items()))
    if figure and snaps:
        path = Path(run_dir) / "domain_tsne.png"
        try:
            plot_tsne(snaps, pad, path, seed=trainer.cfg.seed)
            out["figures"].append(path.name)
        except ValueError as exc:  # e.g. too few samples for t-SNE: the run is kept
            log(f"t-SNE figure not drawn: {exc}")
    return out


def tsne_2d(z: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    z = np.asarray(z, dtype=np.float64)
    k = min(50, len(z) - 1, z.shape[1])
    if z.shape[1] > k:
        z = PCA(k, random_state=seed).fit_transform(z)
    perplexity = float(min(30, max(2, (len(z) - 1) // 3)))
    method = "exact" if len(z) <= 200 else "barnes_hut"
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed, method=method,
                max_iter=500).fit_transform(z)


def plot_tsne(snaps: dict[str, tuple], pad: dict[str, float], path: Path, seed: int = 0) -> Path:
    plt = _plt()
    order = [k for k in ("before", "after") if k in snaps]
    fig, axes = plt.subplots(1, len(order), figsize=(5.2 * len(order), 4.6), squeeze=False)
    for ax, name in zip(axes[0], order):
        z_s, z_t, y_s = snaps[name]
        e = tsne_2d(np.concatenate([z_s, z_t]), seed)
        ns = len(z_s)
        ax.scatter(e[ns:, 0], e[ns:, 1], s=6, c="#d62728", alpha=0.5, label="target")
        ax.scatter(e[:ns, 0], e[:ns, 1], s=6, c="#1f77b4", alpha=0.5, label="source (val)")
        title = f"{name} adaptation"
        if name in pad:
            title += f"  (proxy A-distance {pad[name]:.2f})"
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8, markerscale=2)
    fig.suptitle("t-SNE of the representation the classifier reads", fontsize=10)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path
