"""One run configuration, declared once: :class:`RunConfig`.

A run's settings are grouped in sections; every field has a type, a default and a one-line
help text (:func:`~transferkit.settings.setting`).  Everything else derives from them:

* the ``fit`` command's flags (:func:`transferkit.cli.build_parser`);
* ``--config FILE`` (YAML, JSON or TOML, nested by section or flat leaf names);
* ``RUN/run_config.json`` (``{"format_version": 2, "transferkit_version": ..., <sections>}``)
  and ``fit --resume RUN``;
* ``transferkit.fit(data, **settings)`` and ``TransferClassifier``'s parameters.

A flat mapping names each field by its leaf name (``epochs``, ``val_fraction``, ...); the
first field of the data, backbone, strategy and head sections is named by the section itself
(``data=``, ``backbone=``, ``strategy=``, ``head=``), and a section name given a table sets
that section (``head={"kind": "mlp"}``, ``train={...}``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from .detection.model import DetectionSettings
from .engine.config import TrainConfig
from .errors import ConfigError
from .heads import HeadConfig
from .settings import Settings, fields_of, meta, setting
from .version import __version__

#: version of the run_config.json layout; 1 was the flat, unversioned file of transferkit 0.1
FORMAT_VERSION = 2
IN_MEMORY = "<in-memory>"
TASKS = ("classification", "detection")
MERGES = ("strict", "union")


@dataclass
class DataConfig(Settings):
    section: ClassVar[str] = "data"

    path: str | None = setting(None, "image folder, CSV/TSV, text folder, .tar.gz or .npz; "
                               "several of one label space are merged (--merge)",
                               flat="data", in_memory=True)
    val: str | None = setting(None, "validation data (else carved from DATA, seeded, "
                              "stratified)", in_memory=True)
    test: str | None = setting(None, "test data: scored at the end, never used for a choice "
                               "(with --target: the target domain's labelled test split)",
                               in_memory=True)
    text_column: str | None = setting(None, "CSV/TSV column holding the texts")
    image_column: str | None = setting(None, "CSV/TSV column holding image paths")
    label_column: str | None = setting(None, "CSV/TSV column holding the labels")
    val_fraction: float = setting(0.15, "share of DATA carved out for validation")
    test_fraction: float = setting(0.15, "share of DATA carved out for test (without --test)")
    task: str = setting("classification", "what to learn: classification (one label per "
                        "sample) or detection (boxes: DATA is a COCO .json or a YOLO folder); "
                        "--task NAME=DATA (repeated) names the tasks of a multi-task run",
                        choices=TASKS)
    tasks: dict[str, Any] = setting(factory=dict, help="several tasks on one backbone, one head "
                                    "each: task NAME learnt from DATA (--task NAME=DATA, "
                                    "repeated); --label-column a,b makes one task per column",
                                    flag="--task", metavar="NAME=DATA", in_memory=True)
    merge: str = setting("strict", "several DATA of one task merged into one: strict refuses "
                         "label sets that differ, union keeps every label (and names the ones "
                         "only some sets have)", choices=MERGES)
    shots: int | None = setting(None, "few-shot: K labelled examples per class, seeded, from "
                                "the training split (the rest is kept unlabelled); choices "
                                "are made on the K shots unless --val is given", metavar="K")

    classes: str | None = setting(None, "zero-shot: the class names, comma-separated (else the "
                                  "data's label names, or the descriptions file's)",
                                  metavar="A,B,C")
    descriptions: str | None = setting(None, "zero-shot / tip: JSON file mapping each class to "
                                       "a description or a list of them ({label} templates "
                                       "allowed)", metavar="FILE")

    def validate(self) -> "DataConfig":
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose {', '.join(TASKS)}")
        if self.task == "detection" and (self.tasks or isinstance(self.path, (list, tuple))):
            raise ConfigError("--task detection reads one data set; several tasks or DATA "
                              "are for classification")
        if self.merge not in MERGES:
            raise ConfigError(f"unknown merge {self.merge!r}; choose {', '.join(MERGES)}")
        if self.shots is not None and self.shots < 0:
            raise ConfigError(f"--shots {self.shots}: give 0 (zero-shot) or more labelled "
                              "examples per class")
        return self


@dataclass
class BackboneConfig(Settings):
    section: ClassVar[str] = "backbone"

    name: str | None = setting(None, "backbone name (default: efficientnet_lite0 for images, "
                               "minilm for text); see `transferkit list backbones`",
                               flag="--backbone", short="-b", flat="backbone")
    weights: str | None = setting(None, "local weights file (.safetensors / .pth) for "
                                  "timm:<name>")
    image_size: int | None = setting(None, "input size (smaller is faster)")
    max_length: int | None = setting(None, "longest token sequence for text backbones")


@dataclass
class StrategyConfig(Settings):
    section: ClassVar[str] = "strategy"

    name: str = setting("auto", "strategy (default auto: chosen for the data under "
                        "--budget); see `transferkit list strategies`", flag="--strategy",
                        short="-s", flat="strategy")
    options: dict[str, Any] = setting(factory=dict, help="strategy option, e.g. -o layers=3 "
                                      "-o backbone_lr=1e-4", flag="--option", short="-o",
                                      metavar="KEY=VALUE")


@dataclass
class DomainConfig(Settings):
    section: ClassVar[str] = "domain"

    target: str | None = setting(None, "domain adaptation: the target domain's data (its "
                                 "labels, if any, are never read unless --target-labels "
                                 "grants some); with --domain-column, the target domain's "
                                 "name", in_memory=True)
    target_labels: int = setting(0, "grant N labelled target samples per class for training "
                                 "(semi-supervised; TrAdaBoost needs them)", metavar="N")
    domain_column: str | None = setting(None, "DATA is one table whose column COL names each "
                                        "row's domain; --target then names the target "
                                        "domain, every other row is the source", metavar="COL")
    figures: bool = setting(True, "draw the t-SNE picture of a domain run (the proxy "
                            "A-distance is measured either way)")


@dataclass
class OutputConfig(Settings):
    section: ClassVar[str] = "run"

    out: str | None = setting(None, "run folder (default runs/<time>-<strategy>); a folder "
                              "that holds a run is refused unless --overwrite")
    overwrite: bool = setting(False, "replace the run already in --out (its record, "
                              "checkpoint, figures and bundle; nothing else)")
    cache_dir: str | None = setting(None, "feature cache folder (default "
                                    "$TRANSFERKIT_CACHE_DIR or ~/.cache/transferkit/features)")
    no_cache: bool = setting(False, "compute features afresh; do not read or write the cache")
    quiet: bool = setting(False, "print only results", short="-q")


SECTIONS: dict[str, type[Settings]] = {
    "data": DataConfig, "backbone": BackboneConfig, "strategy": StrategyConfig,
    "head": HeadConfig, "train": TrainConfig, "domain": DomainConfig, "run": OutputConfig,
    "detection": DetectionSettings,
}
_META_KEYS = ("format_version", "transferkit_version")


def leaves() -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(section, field, annotation)`` for every field of a RunConfig, in order."""
    for section, cls in SECTIONS.items():
        for f, hint in fields_of(cls):
            yield section, f, hint


def flat_name(f: dataclasses.Field) -> str:
    """The field's name in a flat mapping (keyword arguments, a flat config file)."""
    return meta(f)["flat"] or f.name


def _flat_index() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for section, f, _ in leaves():
        name = flat_name(f)
        if name in index:  # pragma: no cover - a declaration fault, caught by the tests
            raise RuntimeError(f"two settings are named {name!r}")
        index[name] = (section, f.name)
    return index


FLAT = _flat_index()


@dataclass
class RunConfig:
    """Every setting of a run, by section."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    strategy: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    domain: DomainConfig = dataclasses.field(default_factory=DomainConfig)
    run: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    detection: DetectionSettings = dataclasses.field(default_factory=DetectionSettings)

    # -- building ------------------------------------------------------------------------
    def updated(self, settings: dict[str, Any], *, where: str = "settings") -> "RunConfig":
        """A copy with ``settings`` applied: nested by section (``{"train": {"epochs": 3}}``)
        or flat (``{"epochs": 3, "backbone": "tiny-cnn"}``), or both."""
        per_section: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            k = str(key).replace("-", "_")
            if k in _META_KEYS:
                continue
            if k in SECTIONS and (isinstance(value, (dict, Settings)) or k not in FLAT):
                if value is None:
                    continue
                d = value.to_dict() if isinstance(value, Settings) else value
                if not isinstance(d, dict):
                    raise ConfigError(f"{where}: section {k!r} needs a table of settings, "
                                      f"got {value!r}")
                per_section.setdefault(k, {}).update(d)
            elif k in FLAT:
                section, name = FLAT[k]
                per_section.setdefault(section, {})[name] = value
            else:
                raise ConfigError(f"{where}: unknown setting {key!r}; valid: sections "
                                  f"{', '.join(SECTIONS)} or settings {', '.join(FLAT)}")
        changes = {s: getattr(self, s).updated(d, where=where) for s, d in per_section.items()}
        return dataclasses.replace(self, **changes).validate()

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "config") -> "RunConfig":
        """A RunConfig from a nested dict (``to_dict``'s form) or a flat one; a
        ``format_version`` newer than this transferkit's is refused."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a table of settings, got {type(d).__name__}")
        version = d.get("format_version", 1)
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ConfigError(f"{where}: format_version {version!r} is not one this transferkit "
                              f"reads (1 to {FORMAT_VERSION}); upgrade transferkit")
        return cls().updated(d, where=where)

    def validate(self) -> "RunConfig":
        for s in SECTIONS:
            getattr(self, s).validate()
        if self.data.shots == 0 and self.strategy.name != "zeroshot":
            raise ConfigError(f"--shots 0 (zero-shot: no labelled example) needs --strategy "
                              f"zeroshot, not {self.strategy.name!r}")
        if self.data.task != "detection" and self.detection != DetectionSettings():
            default = DetectionSettings()
            changed = [meta(f)["flag"] for f in dataclasses.fields(default)
                       if getattr(self.detection, f.name) != getattr(default, f.name)]
            raise ConfigError(f"{', '.join(changed)}: detection settings; this run is not "
                              "--task detection")
        return self

    # -- writing -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"format_version": 2, "transferkit_version": ..., <section>: {...}}``; data
        given in memory is written as ``"<in-memory>"``."""
        out: dict[str, Any] = {"format_version": FORMAT_VERSION,
                               "transferkit_version": __version__}
        for s in SECTIONS:
            out[s] = {k: _jsonable(v) for k, v in getattr(self, s).to_dict().items()}
        return out

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        return {name: getattr(getattr(self, s), f) for name, (s, f) in FLAT.items()}

    def in_memory(self) -> bool:
        """Whether some data was given as in-memory samples (the run cannot be replayed)."""
        return any(meta(f)["in_memory"] and not _on_disk(getattr(getattr(self, s), f.name))
                   for s, f, _ in leaves())


def _on_disk(v: Any) -> bool:
    """Whether ``v`` names data by path (or names none): a path, or a list / table of them."""
    if isinstance(v, (list, tuple)):
        return all(_on_disk(x) for x in v)
    if isinstance(v, dict):
        return all(_on_disk(x) for x in v.values())
    return isinstance(v, (str, os.PathLike, type(None)))


def _jsonable(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return IN_MEMORY


def load_config_file(path: str | os.PathLike) -> RunConfig:
    """A RunConfig from a YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON file, nested by
    section or flat; a fault names the file and what is wrong."""
    return RunConfig.from_dict(read_config_file(path), where=str(path))


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such config file")
    suffix = p.suffix.lower()
    try:
        text = p.read_text(encoding="utf-8")
        if suffix == ".toml":
            import tomllib

            d = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse fault is the user's file
        msg = " ".join(str(e).split())
        raise ConfigError(f"{path}: cannot parse config ({type(e).__name__}: {msg})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a table of settings, got {type(d).__name__}")
    return d
