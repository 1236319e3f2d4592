"""The ``transferkit`` command line: fit, evaluate, predict, list, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, TransferkitError

EXAMPLES = """examples:
  transferkit fit photos/ --backbone efficientnet_lite0 --strategy freeze --epochs 10
  transferkit fit data/train --val data/val --strategy finetune --augment --out runs/ft
  transferkit fit reviews.csv --backbone minilm --strategy linear --test reviews_test.csv
  transferkit fit reviews.tsv --backbone wordllama --head bilstm --epochs 15
  transferkit fit photos/ --grayscale --strategy partial -o layers=3
  transferkit fit --resume runs/ft
  transferkit evaluate runs/ft/bundle data/test
  transferkit predict runs/ft/bundle img1.jpg img2.jpg --json
  transferkit explain runs/ft/bundle img1.jpg --out runs/ft/explain
  transferkit list backbones
  transferkit demo
"""


def _kv(s: str) -> tuple[str, str]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    return k.strip(), v.strip()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    common.add_argument("--quiet", "-q", action="store_true", help="print only results")

    p = argparse.ArgumentParser(prog="transferkit", description="Transfer learning from "
                                "pretrained image and text backbones.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("fit", parents=[common], help="adapt a pretrained backbone to labelled data",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("data", nargs="?", help="image folder, CSV/TSV, text folder, .tar.gz or .npz")
    f.add_argument("--val", help="validation data (else carved from DATA, seeded, stratified)")
    f.add_argument("--test", help="test data: scored at the end, never used for a choice "
                   "(with --target: the target domain's labelled test split)")
    f.add_argument("--target", help="domain adaptation: the target domain's data (its labels, "
                   "if any, are never read unless --target-labels grants some)")
    f.add_argument("--domain-column", metavar="COL",
                   help="DATA is one table whose column COL names each row's domain; --target "
                   "then names the target domain, every other row is the source")
    f.add_argument("--target-labels", type=int, metavar="N",
                   help="grant N labelled target samples per class for training "
                   "(semi-supervised; TrAdaBoost needs them)")
    f.add_argument("--select", choices=["auto", "source-val", "iwv", "dev", "entropy"],
                   help="label-free criterion choosing the epoch of a domain-adaptation run "
                   "(default auto = dev)")
    f.add_argument("--backbone", "-b", help="backbone name (default: efficientnet_lite0 for "
                   "images, minilm for text); see `transferkit list backbones`")
    f.add_argument("--strategy", "-s", default=None, help="strategy (default: freeze); see "
                   "`transferkit list strategies`")
    f.add_argument("--option", "-o", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="strategy option, e.g. -o layers=3 -o backbone_lr=1e-4")
    f.add_argument("--epochs", type=int)
    f.add_argument("--lr", type=float, help="learning rate (head for freeze; top backbone group "
                   "for finetune/partial)")
    f.add_argument("--batch-size", type=int)
    f.add_argument("--optimizer", choices=["adamw", "adam", "sgd"])
    f.add_argument("--schedule", choices=["cosine", "constant", "linear"])
    f.add_argument("--warmup", type=float, dest="warmup_epochs", help="warm-up epochs")
    f.add_argument("--weight-decay", type=float)
    f.add_argument("--patience", type=int, help="early stopping after N epochs without "
                   "validation improvement")
    f.add_argument("--label-smoothing", type=float)
    f.add_argument("--head", dest="head_kind", choices=["auto", "linear", "mlp", "bilstm"])
    f.add_argument("--hidden", type=int, help="hidden units of an mlp / bilstm head")
    f.add_argument("--dropout", type=float, help="head dropout")
    f.add_argument("--image-size", type=int, help="input size (smaller is faster)")
    f.add_argument("--max-length", type=int, help="longest token sequence for text backbones")
    f.add_argument("--weights", help="local weights file (.safetensors / .pth) for timm:<name>")
    f.add_argument("--grayscale", action="store_true", default=None,
                   help="convert images to one channel, fed as three")
    f.add_argument("--augment", action="store_true", default=None,
                   help="random resized crop, flip, rotation (backbone re-run every epoch)")
    f.add_argument("--seed", type=int)
    f.add_argument("--text-column")
    f.add_argument("--image-column")
    f.add_argument("--label-column")
    f.add_argument("--val-fraction", type=float)
    f.add_argument("--test-fraction", type=float)
    f.add_argument("--skip-bad", action="store_true", default=None,
                   help="skip unreadable images and list them")
    f.add_argument("--cache-dir", help="feature cache folder (default $TRANSFERKIT_CACHE_DIR "
                   "or ~/.cache/transferkit/features)")
    f.add_argument("--no-cache", action="store_true", default=None)
    f.add_argument("--workers", type=int, help="image decoding worker processes")
    f.add_argument("--device", help="cpu (default), cuda, auto")
    f.add_argument("--out", help="run folder (default runs/<time>-<strategy>)")
    f.add_argument("--config", help="JSON or TOML file of the same settings (flags win)")
    f.add_argument("--resume", metavar="RUN", help="finish an interrupted run from its last checkpoint")

    e = sub.add_parser("evaluate", parents=[common], help="score a bundle on labelled data")
    e.add_argument("bundle")
    e.add_argument("data")
    e.add_argument("--json", action="store_true")

    pr = sub.add_parser("predict", parents=[common], help="predict labels with a bundle")
    pr.add_argument("bundle")
    pr.add_argument("inputs", nargs="+", help="files, a folder, a CSV, or texts with --text")
    pr.add_argument("--text", action="store_true", help="treat INPUTS as texts, not paths")
    pr.add_argument("--json", action="store_true")

    ex = sub.add_parser("explain", parents=[common], help="what a bundle's model attends to "
                        "(attention maps / rollout for ViTs, Grad-CAM for CNNs, token "
                        "attribution for text), before and after adaptation, as PNG + HTML")
    ex.add_argument("bundle")
    ex.add_argument("inputs", nargs="+", help="image files or folders; text files, or texts with --text")
    ex.add_argument("--text", action="store_true", help="treat INPUTS as texts, not paths")
    ex.add_argument("--out", default=None, help="output folder (default BUNDLE/../explain)")

    ls = sub.add_parser("list", parents=[common], help="list backbones or strategies")
    ls.add_argument("what", choices=["backbones", "strategies"])
    ls.add_argument("--all", action="store_true", help="include test-only backbones")

    d = sub.add_parser("demo", parents=[common], help="a real transfer job on built-in data")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--cache-dir")
    return p


TRAIN_KEYS = ("epochs", "lr", "batch_size", "optimizer", "schedule", "warmup_epochs",
              "weight_decay", "patience", "label_smoothing", "grayscale", "augment", "seed",
              "skip_bad", "workers", "device", "select")
FIT_KEYS = ("val", "test", "backbone", "strategy", "image_size", "max_length", "weights",
            "text_column", "image_column", "label_column", "val_fraction", "test_fraction",
            "cache_dir", "no_cache", "out", "target", "target_labels", "domain_column")


def _load_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse fault is the user's file
        raise ConfigError(f"{path}: cannot parse config ({type(e).__name__}: {e})") from None


def cmd_fit(a) -> int:
    from . import api

    if a.resume:
        api.resume(a.resume, quiet=a.quiet)
        return 0
    conf = _load_config(a.config) if a.config else {}
    conf = {k.replace("-", "_"): v for k, v in conf.items()}
    data = a.data or conf.pop("data", None)
    if not data:
        raise ConfigError("fit needs DATA (a folder, CSV/TSV, .tar.gz or .npz), or --resume RUN")
    options = dict(conf.pop("options", {}) or {})
    options.update(dict(a.option))
    head = dict(conf.pop("head", {}) or {})
    for k, v in (("kind", a.head_kind), ("hidden", a.hidden), ("dropout", a.dropout)):
        if v is not None:
            head[k] = v
    kwargs: dict[str, Any] = {}
    for k in FIT_KEYS + TRAIN_KEYS:
        v = getattr(a, k, None)
        if v is not None:
            kwargs[k] = v
        elif k in conf:
            kwargs[k] = conf.pop(k)
    unknown = set(conf) - set(FIT_KEYS) - set(TRAIN_KEYS)
    if unknown:
        raise ConfigError(f"{a.config}: unknown setting(s): {', '.join(sorted(unknown))}")
    kwargs.setdefault("strategy", "freeze")
    api.fit(data, options=options, head=head, quiet=a.quiet, **kwargs)
    return 0


def cmd_evaluate(a) -> int:
    from . import api

    tm = api.load(a.bundle)
    m = tm.evaluate(a.data)
    if a.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  loss {m['loss']:.4f}  n {m['n']}")
    print(f"{'class':20s} precision  recall      F1  support")
    for c, r in m["per_class"].items():
        print(f"{c[:20]:20s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:7.3f} {r['support']:8d}")
    return 0


def cmd_predict(a) -> int:
    from . import api

    tm = api.load(a.bundle)
    if a.text:
        s = api.samples_from_list(a.inputs, "text", tm.classes)
    elif len(a.inputs) == 1 and (Path(a.inputs[0]).is_dir() or Path(a.inputs[0]).suffix.lower()
                                 in (".csv", ".tsv", ".txt", ".npz", ".gz", ".tgz")):
        # a folder or a data file: one sample per image / row (a .txt without tabs is one text)
        s = tm._samples(a.inputs[0])
    else:
        if tm.modality == "text":
            missing = [x for x in a.inputs if not Path(x).exists()]
            if missing:
                raise ConfigError(f"{missing[0]}: no such file (use --text to classify texts "
                                  "given on the command line)")
            items = [Path(x).read_text(encoding="utf-8") for x in a.inputs]
            s = api.samples_from_list(items, "text", tm.classes)
            s.origins = list(a.inputs)
        else:
            for x in a.inputs:
                if not Path(x).exists():
                    raise ConfigError(f"{x}: no such file")
            s = api.samples_from_list(a.inputs, "image", tm.classes)
        if tm.modality == "image":
            from .data.images import check_image

            for item, origin in zip(s.items, s.origins):
                check_image(item, origin)
    proba = tm.predict_proba(s)
    rows = [{"input": o, "label": tm.classes[int(p.argmax())], "probability": float(p.max()),
             "probabilities": {c: float(v) for c, v in zip(tm.classes, p)}}
            for o, p in zip(s.origins, proba)]
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['label']}\t{r['probability']:.4f}\t{r['input']}")
    return 0


def cmd_list(a) -> int:
    if a.what == "backbones":
        from .backbones import list_backbones

        for e in list_backbones(include_test=a.all):
            name = e.name + (":<name>" if e.name in ("timm", "hf", "vectors") else "")
            tag = "offline" if e.offline else "hub"
            print(f"{name:22s} {e.modality:6s} {tag:8s} {e.description}")
    else:
        from .strategies.base import list_strategies

        for s in list_strategies():
            print(f"{s.name:12s} {s.description}")
    return 0


def cmd_explain(a) -> int:
    from .report.explain import explain

    out = Path(a.out) if a.out else Path(a.bundle).resolve().parent / "explain"
    paths = explain(a.bundle, list(a.inputs), out, texts=a.text)
    html = [p for p in paths if str(p).endswith(".html")]
    print(f"wrote {len(paths)} file(s) to {out}" + (f"; open {html[0]}" if html else ""))
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(out=a.out, cache_dir=a.cache_dir, quiet=a.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handler = {"fit": cmd_fit, "evaluate": cmd_evaluate, "predict": cmd_predict,
               "explain": cmd_explain, "list": cmd_list, "demo": cmd_demo}[a.command]
    try:
        return handler(a)
    except TransferkitError as e:
        if a.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if a.debug:
            raise
        run = getattr(a, "out", None) or getattr(a, "resume", None)
        hint = f"; resume with: transferkit fit --resume {run}" if a.command == "fit" and run else ""
        print(f"interrupted: the last checkpoint was kept{hint}", file=sys.stderr)
        return 130
    except MemoryError:
        if a.debug:
            raise
        print("error: out of memory; try a smaller --batch-size or --image-size", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - last line of defence: no raw traceback
        if a.debug:
            raise
        msg = " ".join(str(e).split())[:300]
        print(f"error: {type(e).__name__}: {msg} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
