"""``transferkit demo``: a real transfer job that needs no download.

The data is scikit-learn's built-in handwritten digits (1,797 images of 8x8 pixels, 10
classes; shipped inside the scikit-learn wheel), written once as an ``.npz``.  The backbone is
the offline ImageNet EfficientNet-Lite0; the strategy is ``freeze`` (a new head on cached
features).  The run prints validation and test figures and where the bundle and report went.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import api
from .config import RunConfig
from .io import save_with


def demo_data(folder: Path) -> Path:
    from sklearn.datasets import load_digits

    path = folder / "sklearn_digits.npz"
    if not path.exists():
        d = load_digits()
        x = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
        y = d.target.astype(np.int64)
        save_with(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), x=x, y=y))
    return path


def demo_config() -> "RunConfig":
    """The demo's settings: EfficientNet-Lite0 at 128 px, frozen, an MLP head, 30 epochs."""
    return RunConfig.from_dict({
        "backbone": {"name": "efficientnet_lite0", "image_size": 128},
        "strategy": {"name": "freeze"},
        "head": {"kind": "mlp", "hidden": 512, "dropout": 0.2},
        "train": {"epochs": 30, "lr": 3e-3, "seed": 0},
    }, where="demo")


def run_demo(out: str = "runs/demo", cache_dir: str | None = None, quiet: bool = False):
    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    data = demo_data(out_p)
    if not quiet:
        print(f"demo: scikit-learn digits ({data}), backbone efficientnet_lite0 (ImageNet, offline), "
              "strategy freeze")
    # the demo's folder is its own: a second demo replaces the first one's run
    tm = api.fit(data, config=demo_config(), out=out_p, cache_dir=cache_dir, quiet=quiet,
                 overwrite=True)
    m = tm.metrics
    print(f"validation accuracy {m['val']['accuracy']:.4f} (macro F1 {m['val']['macro_f1']:.4f}, "
          f"n={m['val']['n']})")
    print(f"test accuracy       {m['test']['accuracy']:.4f} (macro F1 {m['test']['macro_f1']:.4f}, "
          f"n={m['test']['n']})")
    print(f"bundle:  {out_p / 'bundle'}")
    print(f"report:  {out_p / 'report.html'}  (curves, per-class figures, confusion matrices)")
    print(f"metrics: {out_p / 'metrics.json'}")
    print(f"next:    transferkit predict {out_p / 'bundle'} {data}")
    return tm
