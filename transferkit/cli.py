"""The ``transferkit`` command line: fit, evaluate, predict, explain, export, report,
episodes, rank, compare, advise, paths, list, demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import api
from .backbones import list_backbones
from .config import FLAT, RunConfig, SECTIONS, flat_name, leaves, load_config_file
from .data import check_image, read_inputs
from .demo import run_demo
from .detection.run import draw_boxes, image_inputs
from .engine.distributed import launch_processes
from .episodes import describe as describe_episodes, episodes as run_episodes
from .errors import REPORT_BUG, ConfigError, Terminated, TransferkitError, printable
from .export import OPSET, export_onnx
from .report.compare import compare_runs, differences, read_run
from .advise import advice_text, advise as run_advise
from .auto import DESCRIPTION as AUTO_DESCRIPTION
from .compare import GREY_CHOICES, compare as run_compare, table_markdown as compare_table
from .paths import paths_record, paths_table
from .rank import rank, rank_table, write_rank
from .report.explain import explain
from .settings import meta, split_optional
from .strategies.base import list_strategies

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
  transferkit export runs/ft/bundle --onnx ft.onnx
  transferkit report runs/ft runs/lora runs/linear --out runs/compare
  transferkit episodes photos/ --strategy prototype --ways 2 --shots 1 --episodes 600 --out ep
  transferkit rank photos/ --backbones efficientnet_lite0,efficientnet_lite1 --out rank.json
  transferkit fit canvases/ --task detection --strategy partial -o layers=3 --epochs 8
  transferkit predict runs/det/bundle photo.png --draw boxes/
  transferkit list backbones
  transferkit demo
"""


def _kv(s: str) -> tuple[str, str]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    return k.strip(), v.strip()


#: flags of ``fit`` that are no setting of a run: they say how to run the command
FIT_COMMAND_FLAGS = ("help", "debug", "config", "resume")


def _add_bundle_commands(sub, common) -> None:
    """``evaluate`` and ``predict``: what a saved bundle does with new data."""
    e = sub.add_parser("evaluate", parents=[common], help="score a bundle on labelled data")
    e.add_argument("bundle")
    e.add_argument("data")
    e.add_argument("--json", action="store_true")
    e.add_argument("--task", metavar="NAME", help="a model of several tasks: the task whose "
                   "labels DATA holds (default: the one task whose classes hold them)")

    pr = sub.add_parser("predict", parents=[common], help="predict labels with a bundle")
    pr.add_argument("bundle")
    pr.add_argument("inputs", nargs="+", help="files, a folder, a CSV, or texts with --text")
    pr.add_argument("--text", action="store_true", help="treat INPUTS as texts, not paths")
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--draw", metavar="DIR", help="detection: write each image with its boxes "
                    "to DIR")
    pr.add_argument("--task", metavar="NAME", help="a model of several tasks: print this "
                    "task's label only (default: every task's)")
    pr.add_argument("--min-score", type=float, default=0.3, help="detection: the lowest "
                    "score a printed or drawn box has (default 0.3)")
    for p in (e, pr):
        p.add_argument("--domain", metavar="NAME", help="a model with domain-specific parts: "
                       "the input domain the data comes from")


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    common = argparse.ArgumentParser(add_help=False, parents=[debug])
    common.add_argument("--quiet", "-q", action="store_true", help="print only results")

    p = argparse.ArgumentParser(prog="transferkit", description="Transfer learning from "
                                "pretrained image and text backbones.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # before the command (transferkit --debug fit ...) they mean what they mean after it;
    # their own names, because a command's defaults would overwrite them
    p.add_argument("--debug", dest="debug_first", action="store_true",
                   help="show the full traceback on errors")
    p.add_argument("--quiet", "-q", dest="quiet_first", action="store_true",
                   help="print only results")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("fit", parents=[debug], help="adapt a pretrained backbone to labelled data",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_flags(f)
    f.add_argument("--config", metavar="FILE", help="YAML, JSON or TOML file of the same "
                   "settings, nested by section or flat (flags win)")
    f.add_argument("--resume", metavar="RUN", help="finish an interrupted run from its last checkpoint")

    _add_bundle_commands(sub, common)

    ex = sub.add_parser("explain", parents=[common], help="what a bundle's model attends to "
                        "(attention maps / rollout for ViTs, Grad-CAM for CNNs, token "
                        "attribution for text), before and after adaptation, as PNG + HTML")
    ex.add_argument("bundle")
    ex.add_argument("inputs", nargs="+", help="image files or folders; text files, or texts with --text")
    ex.add_argument("--text", action="store_true", help="treat INPUTS as texts, not paths")
    ex.add_argument("--out", default=None, help="output folder (default BUNDLE/../explain)")

    xp = sub.add_parser("export", parents=[common], help="export a bundle's model to ONNX "
                        "(preprocessed tensors in, probabilities out; a JSON beside it "
                        "describes inputs, preprocessing and labels)")
    xp.add_argument("bundle", help="a bundle folder (or a run folder holding one)")
    xp.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the graph to write")
    xp.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")

    rp = sub.add_parser("report", parents=[common], help="one page comparing finished runs "
                        "(scores, time, trainable parameters, curves overlaid)")
    rp.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by fit")
    rp.add_argument("--out", required=True, metavar="DIR", help="folder for index.html, "
                    "runs.csv and the figures")

    reading = _reading_parser(common)
    _episodes_parser(sub, reading)
    _rank_parser(sub, reading)
    _compare_parser(sub, reading)
    _advise_parser(sub, reading)
    pa = sub.add_parser("paths", parents=[common], help="the eight paths of transfer (task x "
                        "domain x order), an example and the command for each")
    pa.add_argument("--json", action="store_true", help="print the map as JSON")
    ls = sub.add_parser("list", parents=[common], help="list backbones or strategies")
    ls.add_argument("what", choices=["backbones", "strategies"])
    ls.add_argument("--all", action="store_true", help="include test-only backbones")

    d = sub.add_parser("demo", parents=[common], help="a real transfer job on built-in data")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--cache-dir")
    return p


def _reading_parser(common) -> argparse.ArgumentParser:
    """The flags of the commands that read a data set through the feature cache (rank,
    advise, compare, episodes), declared once."""
    reading = argparse.ArgumentParser(add_help=False, parents=[common])
    reading.add_argument("--cache-dir", help="feature cache folder")
    reading.add_argument("--skip-bad", action="store_true",
                         help="leave out unreadable images and list them")
    return reading


def _rank_parser(sub, common) -> None:
    rk = sub.add_parser("rank", parents=[common], help="score candidate backbones on DATA's "
                        "training split without training (LogME, H-score, shrinkage H-score, SFDA; LEEP and NCE "
                        "where the backbone has a source classifier); higher is better")
    rk.add_argument("data", help="labelled data (a folder, CSV/TSV, .tar.gz or .npz)")
    rk.add_argument("--backbones", required=True, metavar="A,B,C",
                    help="backbone names separated by commas (see: transferkit list backbones)")
    rk.add_argument("--layers", metavar="L1,L2", default=None,
                    help="score intermediate layers too, each (backbone, layer) a candidate: "
                         "pooled (the backbone's own features, the default), all, or layer "
                         "numbers (1 = nearest the input, -1 = the last), e.g. pooled,-1,-2")
    rk.add_argument("--out", metavar="FILE.json", help="write the scores and their times here")
    rk.add_argument("--seed", type=int, default=None,
                    help="seed of the train / val / test carving (default: fit's)")
    rk.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    rk.add_argument("--batch-size", type=int, default=64, help="feature extraction batch size")
    rk.add_argument("--no-cache", action="store_true", help="compute features afresh")


def _advise_parser(sub, common) -> None:
    ad = sub.add_parser("advise", parents=[common], help="place DATA in the size x similarity "
                        "guideline and the eight-path map from measurements, and print the "
                        "commands to run")
    ad.add_argument("data", help="labelled data (a folder, CSV/TSV, .tar.gz or .npz)")
    ad.add_argument("--target", metavar="T", help="data of the domain the model will serve")
    ad.add_argument("--source", metavar="S", help="another labelled data set to learn from")
    ad.add_argument("--backbone", "-b", help="backbone to measure with (default: "
                    "efficientnet_lite0 for images, minilm for text)")
    ad.add_argument("--json", action="store_true", help="print the measurements as JSON")
    ad.add_argument("--seed", type=int, default=None, help="seed of the split (default: fit's)")


def _compare_parser(sub, common) -> None:
    cp = sub.add_parser("compare", parents=[common], help="the freeze-vs-fine-tune grid: every "
                        "strategy x backbone (x colour / grey) over seeds, as a table, a plot "
                        "and a page; finished runs are kept, so it resumes")
    cp.add_argument("data", help="labelled data (a folder, CSV/TSV, .tar.gz or .npz)")
    cp.add_argument("--strategies", required=True, metavar="A,B,C",
                    help="strategies separated by commas, e.g. linear,freeze,partial,finetune")
    cp.add_argument("--backbones", metavar="A,B", help="backbones separated by commas "
                    "(default: efficientnet_lite0 for images, minilm for text)")
    cp.add_argument("--grayscale", default="no", choices=sorted(GREY_CHOICES),
                    help="colour only (no), grey only (yes) or both (default no)")
    cp.add_argument("--seeds", type=int, default=1, help="seeds per cell (default 1)")
    cp.add_argument("--out", required=True, metavar="DIR", help="folder of the runs and tables")
    cp.add_argument("--epochs", type=int, help="training epochs (default: fit's)")
    cp.add_argument("--budget", metavar="TIME", help="time budget of each run (e.g. 10m)")
    cp.add_argument("--val", help="validation data (default: carved from DATA)")
    cp.add_argument("--test", help="test data (default: carved from DATA)")


def _episodes_parser(sub, common) -> None:
    ep = sub.add_parser("episodes", parents=[common], help="episodic few-shot evaluation: "
                        "mean accuracy ± 95%% interval over seeded N-way K-shot episodes "
                        "on cached features")
    ep.add_argument("data", help="labelled data (every split is drawn from)")
    ep.add_argument("--backbone", "-b", help="backbone (default: efficientnet_lite0 for "
                    "images, minilm for text)")
    ep.add_argument("--strategy", "-s", default="prototype", help="a strategy with a "
                    "closed-form fit on features: prototype (default) or linear")
    ep.add_argument("--option", "-o", type=_kv, action="append", default=[],
                    metavar="KEY=VALUE", help="strategy option")
    for flag, default, what in (("ways", 5, "classes per episode"),
                                ("shots", 1, "support samples per class"),
                                ("queries", 15, "query samples per class"),
                                ("episodes", 600, "episodes"), ("seed", 0, "seed")):
        ep.add_argument(f"--{flag}", type=int, default=default, help=f"{what} (default {default})")
    ep.add_argument("--out", metavar="DIR", help="write DIR/episodes.json and DIR/episodes.csv")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (the data path is the positional DATA), grouped by
    section; every flag defaults to None so that a config file's value shows through."""
    groups = {s: parser.add_argument_group(f"{s} settings") for s in SECTIONS}
    for section, f, hint in leaves():
        m, dest = meta(f), flat_name(f)
        if dest == "data":
            groups[section].add_argument("data", nargs="*", help=m["help"])
            continue
        if dest == "tasks":  # given through --task NAME=DATA (see given_settings)
            continue
        if dest == "task":
            groups[section].add_argument("--task", dest="task", action="append", default=None,
                                         metavar="KIND | NAME=DATA",
                                         help=m["help"] + f" (default {f.default})")
            continue
        flags, kw = setting_flag(f, hint)
        groups[section].add_argument(*flags, dest=dest, default=None, **kw)


def setting_flag(f, hint) -> tuple[list[str], dict[str, Any]]:
    """The option strings and ``add_argument`` keywords of one RunConfig field: a boolean
    is a switch (``--name``, or ``--no-name`` when it defaults to true), a table is
    ``KEY=VALUE`` repeated, anything else takes one value of the field's type."""
    m = meta(f)
    base, _ = split_optional(hint)
    long = m["flag"] or "--" + f.name.replace("_", "-")
    help_ = m["help"]
    if base is bool:
        if f.default is True:
            return ["--no-" + long[2:]], {"action": "store_false", "help": "do not " + help_}
        return [long] + ([m["short"]] if m["short"] else []), {"action": "store_true",
                                                                 "help": help_}
    flags = [long] + ([m["short"]] if m["short"] else [])
    if base is dict:
        return flags, {"action": "append", "type": _kv, "metavar": m["metavar"], "help": help_}
    if f.default not in (None, dataclasses.MISSING):
        help_ += f" (default {f.default})"
    return flags, {"type": base, "choices": m["choices"], "metavar": m["metavar"], "help": help_}


def given_settings(a: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by flat name (``-o`` pairs as a table)."""
    out = {k: getattr(a, k) for k in FLAT if getattr(a, k, None) is not None}
    if "options" in out:
        out["options"] = dict(out["options"])
    for k in ("task_weight",):
        if k in out:
            out[k] = _distinct(out[k], "--task-weight")
    data = out.pop("data", None) or []
    if data:
        out["data"] = data[0] if len(data) == 1 else list(data)
    if "task" in out:
        out.update(_task_values(out.pop("task")))
    return out


def _distinct(pairs: list[tuple[str, str]], flag: str) -> dict[str, str]:
    seen: dict[str, str] = {}
    for k, v in pairs:
        if k in seen:
            raise ConfigError(f"{flag} {k}= is given twice")
        seen[k] = v
    return seen


def _task_values(values: list[str]) -> dict[str, Any]:
    """``--task`` values: ``NAME=DATA`` name a task of a multi-task run, a bare word is
    what to learn (classification, detection)."""
    named = [_kv(v) for v in values if "=" in v]
    kinds = [v for v in values if "=" not in v]
    out: dict[str, Any] = {}
    if named:
        out["tasks"] = _distinct(named, "--task")
    if len(kinds) > 1:
        raise ConfigError(f"--task {kinds[0]} and --task {kinds[1]}: give what to learn once")
    if kinds:
        out["task"] = kinds[0]
    return out


def cmd_fit(a) -> int:
    if a.resume:
        _resume_alone(a)
        processes = api.recorded_run_config(a.resume).train.processes
        if launch_processes(processes, a.argv):
            return 0
        api.resume(a.resume, quiet=bool(a.quiet))
        return 0
    cfg = load_config_file(a.config) if a.config else RunConfig()
    cfg = cfg.updated(given_settings(a), where="command line")
    if cfg.data.path is None and not cfg.data.tasks and api.needs_data(cfg):
        raise ConfigError("fit needs DATA (a folder, CSV/TSV, .tar.gz or .npz), or --resume RUN")
    if launch_processes(cfg.train.processes, a.argv):
        return 0
    api.fit(config=cfg)
    return 0


def _resume_alone(a) -> None:
    """``--resume RUN`` takes every setting from ``RUN/run_config.json``: refuse others, which
    would otherwise be ignored without a word (``--quiet`` says how to print, not how to run)."""
    given = [k for k in given_settings(a) if k != "quiet"]
    if a.config:
        given.insert(0, "config")
    if given:
        flags = ", ".join(_flag_of(k) for k in given)
        raise ConfigError(f"--resume {a.resume} takes its settings from the run's "
                          f"run_config.json; drop {flags} (or start a new run with --out)")


def _flag_of(name: str) -> str:
    if name == "config":
        return "--config"
    if name == "data":
        return "DATA"
    section, field = FLAT[name]
    f = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == field)
    return meta(f)["flag"] or "--" + field.replace("_", "-")


def _say_notes(s, quiet: bool) -> None:
    """What the reader left out (links to files already read), on stderr."""
    for note in [] if quiet else s.notes:
        print(printable(note), file=sys.stderr)


def cmd_evaluate(a) -> int:
    tm = api.load(a.bundle)
    if getattr(tm, "task", "classification") == "detection":
        return _evaluate_detection(tm, a)
    if tm.tasks is None:
        s = tm._samples(a.data, labelled=True)
        _say_notes(s, a.quiet)
        m = tm.evaluate(s, task=a.task, domain=a.domain)
    else:
        m = tm.evaluate(a.data, task=a.task, domain=a.domain)
    if a.json:
        print(json.dumps(m, indent=2))
        return 0
    if "task" in m:
        print(f"task {m['task']}")
    print(f"accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  loss {m['loss']:.4f}  n {m['n']}")
    print(f"{'class':20s} precision  recall      F1  support")
    for c, r in m["per_class"].items():
        print(f"{c[:20]:20s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:7.3f} {r['support']:8d}")
    return 0


def _evaluate_detection(tm, a) -> int:
    m = tm.evaluate(a.data)
    if a.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"mAP50 {m['map50']:.4f}  mAP {m['map']:.4f}  mAP75 {m['map75']:.4f}  "
          f"AR100 {m['mar100']:.4f}  images {m['n']}  boxes {m['boxes']}")
    print(f"{'class':20s}     AP50       AP")
    for c, r in m["per_class"].items():
        cells = [f"{v:8.3f}" if v is not None else "       -" for v in (r["ap50"], r["ap"])]
        print(f"{c[:20]:20s} {cells[0]} {cells[1]}")
    return 0


def _predict_detection(tm, a) -> int:
    if a.text:
        raise ConfigError("--text: a detection model takes images")
    items, origins = image_inputs(a.inputs)
    preds = tm.predict(items, origins)
    rows = []
    for o, p in zip(origins, preds):
        keep = [i for i, s in enumerate(p["scores"]) if s >= a.min_score]
        rows.append({"input": o, "boxes": [
            {"label": p["labels"][i], "score": round(float(p["scores"][i]), 4),
             **{k: round(float(v), 2) for k, v in zip(("x0", "y0", "x1", "y1"), p["boxes"][i])}}
            for i in keep]})
        if a.draw:
            draw_boxes(o, p, Path(a.draw), a.min_score)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{printable(r['input'])}\t{len(r['boxes'])} boxes")
            for b in r["boxes"]:
                print(f"  {b['label']}\t{b['score']:.4f}\t{b['x0']:.1f}\t{b['y0']:.1f}\t"
                      f"{b['x1']:.1f}\t{b['y1']:.1f}")
    if a.draw and not a.quiet:
        print(f"wrote {len(rows)} image(s) with boxes to {a.draw}", file=sys.stderr)
    return 0


def cmd_predict(a) -> int:
    tm = api.load(a.bundle)
    if getattr(tm, "task", "classification") == "detection":
        return _predict_detection(tm, a)
    if a.draw:
        raise ConfigError("--draw applies to detection models; this bundle classifies")
    if a.text:
        s = api.samples_from_list(a.inputs, "text", tm.classes)
    else:
        if tm.modality == "text":
            missing = [x for x in a.inputs if not os.path.lexists(x)]
            if missing:
                raise ConfigError(f"{missing[0]}: no such file (use --text to classify texts "
                                  "given on the command line)")
        # each input a folder, a data file, an image or a text file; any mix of them
        s = read_inputs(a.inputs, tm.modality)
        _say_notes(s, a.quiet)
        if tm.modality == "image":
            for item, origin in zip(s.items, s.origins):
                check_image(item, origin)
    if tm.tasks is not None:
        return _predict_tasks(tm, s, a)
    if a.task is not None:
        tm.task_classes(a.task)  # refuses: the model has one task
    proba = tm.predict_proba(s, domain=a.domain)
    rows = [{"input": o, "label": tm.classes[int(p.argmax())], "probability": float(p.max()),
             "probabilities": {c: float(v) for c, v in zip(tm.classes, p)}}
            for o, p in zip(s.origins, proba)]
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['label']}\t{r['probability']:.4f}\t{printable(r['input'])}")
    return 0


def _predict_tasks(tm, s, a) -> int:
    """Every task's label of every input (one backbone pass), or ``--task NAME``'s."""
    names = [a.task] if a.task is not None else tm.tasks
    proba = tm.predict_proba(s, domain=a.domain)
    rows = []
    for r, origin in enumerate(s.origins):
        labels = {}
        for t in names:
            b = tm._block(t)
            p = proba[r, b.start:b.stop]
            labels[t] = {"label": tm.task_classes(t)[int(p.argmax())],
                         "probability": float(p.max())}
        rows.append({"input": origin, "tasks": labels})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        cells = [f"{t}={v['label']}\t{v['probability']:.4f}" for t, v in row["tasks"].items()]
        print("\t".join(cells) + f"\t{printable(row['input'])}")
    return 0


def cmd_list(a) -> int:
    if a.what == "backbones":
        for e in list_backbones(include_test=a.all):
            name = e.name + (":<name>" if e.name in ("timm", "hf", "vectors") else "")
            tag = "offline" if e.offline else "hub"
            print(f"{name:22s} {e.modality:6s} {tag:8s} {e.description}")
    else:
        for s in list_strategies():
            print(f"{s.name:12s} {s.description}")
        print(f"{'auto':12s} {AUTO_DESCRIPTION} (the default)")
    return 0


def cmd_explain(a) -> int:
    out = Path(a.out) if a.out else Path(a.bundle).resolve().parent / "explain"
    paths = explain(a.bundle, list(a.inputs), out, texts=a.text)
    html = [p for p in paths if str(p).endswith(".html")]
    print(f"wrote {len(paths)} file(s) to {out}" + (f"; open {html[0]}" if html else ""))
    return 0


def cmd_export(a) -> int:
    desc = export_onnx(a.bundle, a.onnx, opset=a.opset)
    out = Path(a.onnx)
    check = desc["check"]
    print(f"wrote {out} and {out.with_suffix('.json')} in {check['export_s']:.1f} s; "
          f"ONNX Runtime agrees with the bundle to {check['max_abs_diff_probabilities']:.1e} "
          f"(inputs: {', '.join(i['name'] for i in desc['inputs'])})")
    return 0


def cmd_report(a) -> int:
    page = compare_runs(a.runs, a.out)
    for note in differences([read_run(r) for r in a.runs]):
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {page}")
    return 0


def cmd_episodes(a) -> int:
    record = run_episodes(a.data, backbone=a.backbone, strategy=a.strategy,
                          options=dict(a.option), ways=a.ways, shots=a.shots,
                          queries=a.queries, episodes=a.episodes, seed=a.seed, out=a.out,
                          cache_dir=a.cache_dir, skip_bad=a.skip_bad, quiet=a.quiet)
    print(describe_episodes(record))
    if a.out and not a.quiet:
        print(f"wrote {Path(a.out) / 'episodes.json'} and {Path(a.out) / 'episodes.csv'}")
    return 0


def cmd_rank(a) -> int:
    if a.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1; got {a.batch_size}")
    if a.out and Path(a.out).is_dir():
        raise ConfigError(f"--out {a.out}: is a folder; give a file name such as rank.json")
    log = (lambda s: None) if a.quiet else (lambda s: print(printable(s), file=sys.stderr))
    record = rank(a.data, a.backbones, layers=a.layers, seed=a.seed, cache_dir=a.cache_dir,
                  no_cache=a.no_cache, device=a.device, batch_size=a.batch_size,
                  skip_bad=a.skip_bad, log=log)
    print(rank_table(record))
    if a.out:
        print(f"wrote {write_rank(record, a.out)}", file=sys.stderr)
    return 0


def cmd_compare(a) -> int:
    extra = {k: getattr(a, k) for k in ("epochs", "budget", "val", "test", "cache_dir")
             if getattr(a, k) is not None}
    log = (lambda s: None) if a.quiet else (lambda s: print(printable(s), file=sys.stderr))
    record = run_compare(a.data, strategies=a.strategies, backbones=a.backbones,
                         grayscale=a.grayscale, seeds=a.seeds, out=a.out, log=log,
                         skip_bad=a.skip_bad, **extra)
    print(compare_table(record["cells"]), end="")
    if not a.quiet:
        print(f"wrote {Path(a.out) / 'compare.md'}, compare.csv, compare.png, compare.json and "
              f"{Path(a.out) / 'report' / 'index.html'}", file=sys.stderr)
    return 0


def cmd_advise(a) -> int:
    record = run_advise(a.data, backbone=a.backbone, target=a.target, source=a.source,
                        cache_dir=a.cache_dir, seed=a.seed, skip_bad=a.skip_bad)
    print(json.dumps(record, indent=2) if a.json else advice_text(record))
    return 0


def cmd_paths(a) -> int:
    print(json.dumps(paths_record(), indent=2) if a.json else paths_table())
    return 0


def cmd_demo(a) -> int:
    run_demo(out=a.out, cache_dir=a.cache_dir, quiet=a.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    a.debug = bool(getattr(a, "debug", False) or a.debug_first)
    if a.quiet_first:
        a.quiet = True
    if not a.command:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handler = {"fit": cmd_fit, "evaluate": cmd_evaluate, "predict": cmd_predict,
               "explain": cmd_explain, "export": cmd_export, "report": cmd_report,
               "episodes": cmd_episodes, "rank": cmd_rank, "compare": cmd_compare, "advise": cmd_advise, "paths": cmd_paths, "list": cmd_list,
               "demo": cmd_demo}[a.command]
    try:
        with api.sigterm_as_interrupt():
            return handler(a)
    except TransferkitError as e:
        if a.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        if a.debug:
            raise
        return _interrupted(a, e)
    except BrokenPipeError:  # the reader went away (`transferkit predict ... | head`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141  # 128 + SIGPIPE, as a shell reports a command its pipe cut short
    except MemoryError:
        if a.debug:
            raise
        print("error: out of memory; try a smaller --batch-size or --image-size", file=sys.stderr)
        return 1
    except OSError as e:
        if a.debug or not e.filename:
            if a.debug:
                raise
            return _internal(e)
        # a file the system would not read or write (permission, a full disk, ...)
        print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last line of defence: no raw traceback
        if a.debug:
            raise
        return _internal(e)


def _internal(e: BaseException) -> int:
    """An internal error: one line, exit 1, and where to report it."""
    msg = " ".join(str(e).split())[:300]
    print(f"error: {type(e).__name__}: {msg} ({REPORT_BUG})", file=sys.stderr)
    return 1


def _interrupted(a, e: KeyboardInterrupt) -> int:
    """Ctrl-C exits with 130 and SIGTERM with 143 (128 + the signal's number)."""
    what, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
    if a.command != "fit":
        print(what, file=sys.stderr)
        return code
    run = getattr(a, "resume", None) or getattr(a, "out", None)
    hint = f"; resume with: transferkit fit --resume {run}" if run else ""
    print(f"{what}: the last checkpoint was kept{hint}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
