"""Reading a data set from a path: folders, archives, CSV / TSV tables and ``.npz`` arrays.

:func:`read_data` detects the format from the path and returns a dict of splits
(``"train"``, ``"val"``, ``"test"`` when the input itself is split, else ``"all"``) of
:class:`~transferkit.data.samples.Samples`.  Every fault in the input is raised as a
one-line :class:`~transferkit.errors.DataError` naming the file and, where it applies,
the line or row.

Supported inputs:

* an image folder: one subfolder per class holding image files (any depth);
* a text folder: one subfolder per class holding ``.txt`` files, one sample per file;
* a split folder: ``train/`` plus ``val/`` (or ``valid/``, ``validation/``) and/or
  ``test/``, each laid out as above;
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive holding text folders, split or not (the
  IMDB layout ``aclImdb/{train,test}/{pos,neg}/*.txt``), read as a stream;
* a CSV / TSV table (``.csv``, ``.tsv``, ``.txt`` with tabs) of text or image paths;
* an ``.npz`` with arrays ``x`` (``uint8`` images) and ``y`` (integer labels);
* for prediction (``labelled=False``): also a folder of images with no class folders, a
  single image file or a single text file.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import tarfile
import zipfile
import zlib
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .samples import Samples, sort_classes
from .splits import concat_samples

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TEXT_EXTENSIONS = {".txt"}
TABLE_EXTENSIONS = {".csv", ".tsv"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

#: Folder names that mark a split, and the split each one means.
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
#: Class folders that are never classes (IMDB's unlabelled reviews).
IGNORED_CLASS_FOLDERS = {"unsup"}

LABEL_COLUMN_NAMES = ("label", "labels", "class", "target", "y", "category", "sentiment")
TEXT_COLUMN_NAMES = ("text", "sentence", "review", "content", "document")
IMAGE_COLUMN_NAMES = ("image", "path", "file", "filename", "filepath")

_SPLIT_ORDER = ("train", "val", "test")
_TABLE_DELIMITERS = (",", ";", "\t", "|")


# --------------------------------------------------------------------------- entry point

def read_data(path: str | os.PathLike, *, text_column: str | None = None,
              image_column: str | None = None, label_column: str | None = None,
              classes: Sequence[str] | None = None,
              labelled: bool = True) -> dict[str, Samples]:
    """Read a data set and return its splits.

    Args:
        path: a folder, archive, table, ``.npz``, or (unlabelled) a single image / text file.
        text_column, image_column, label_column: table columns by header name; when not
            given they are found from the header names or the values.
        classes: the class list to index labels against (e.g. a trained model's); a
            label outside it is an error.  Without it the classes are the sorted label
            names (numerically when they are all integers).
        labelled: ``False`` for prediction inputs: labels are not read and are ``None``.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}`` (the splits present) for split inputs,
        else ``{"all": ...}``.  All splits share one class list.

    Raises:
        DataError: a missing path, an unknown format, or any fault in the data.
        ConfigError: both ``text_column`` and ``image_column`` given.
    """
    display = os.fspath(path)
    if text_column and image_column:
        raise ConfigError("give a text column or an image column, not both")
    if not os.path.exists(display):
        raise DataError(f"{display}: no such file or folder")
    _refuse_special(display)
    lower = display.lower()
    suffix = os.path.splitext(lower)[1]

    if os.path.isdir(display):
        splits = _read_folder(display, labelled)
    elif lower.endswith(ARCHIVE_SUFFIXES):
        splits = _read_archive(display, labelled)
    elif suffix == ".npz":
        splits = {"all": _read_npz(display, labelled)}
    elif suffix in TABLE_EXTENSIONS or suffix in TEXT_EXTENSIONS:
        if suffix in TEXT_EXTENSIONS and not labelled and not _has_tab(display):
            splits = {"all": _read_single_text(display)}
        else:
            splits = {"all": _read_table(display, text_column=text_column,
                                         image_column=image_column,
                                         label_column=label_column, labelled=labelled)}
    elif suffix in IMAGE_EXTENSIONS:
        if labelled:
            raise DataError(f"{display}: a single image has no label; give a folder with one "
                            "subfolder per class, a CSV or an .npz")
        splits = {"all": Samples("image", [display], None, [], [display], display)}
    else:
        raise DataError(f"{display}: unknown data format '{suffix or os.path.basename(display)}'; "
                        "expected a folder, .csv, .tsv, .txt, .npz, .tar.gz or an image file")

    if labelled:
        splits = _share_classes(splits)
        if classes is None:
            found = splits[next(iter(splits))].classes
            if len(found) < 2:
                what = f"only 1 class ({found[0]!r})" if found else "no classes"
                raise DataError(f"{display}: found {what}; need at least 2")
    if classes is not None:
        splits = {name: split.with_classes(list(classes)) for name, split in splits.items()}
    return splits


def read_inputs(paths: Sequence[str | os.PathLike], modality: str) -> Samples:
    """Prediction inputs for a model of ``modality``: every path a folder, a data file
    (table, ``.npz``, archive), an image file or a text file, joined in the order given.

    Whatever kind of input works alone works in a list.

    Raises:
        DataError: a missing path, an unreadable input, or one that holds the other
            modality's data (naming it).
    """
    parts = []
    for path in paths:
        display = os.fspath(path)
        part = _read_input(display, modality)
        if part.modality != modality:
            raise DataError(f"{display}: holds {part.modality} data but this model takes "
                            f"{modality}")
        parts.append(part)
    if not parts:
        raise DataError("no inputs given")
    return concat_samples(parts) if len(parts) > 1 else parts[0]


def _read_input(path: str, modality: str) -> Samples:
    """One prediction input: a folder or data file is read whole; any other file is one
    image (for an image model) or one text."""
    if not os.path.lexists(path):
        raise DataError(f"{path}: no such file or folder")
    _refuse_special(path)
    lower = path.lower()
    suffix = os.path.splitext(lower)[1]
    data_file = (lower.endswith(ARCHIVE_SUFFIXES) or suffix in TABLE_EXTENSIONS
                 or suffix == ".npz" or (suffix in TEXT_EXTENSIONS and _has_tab(path)))
    if os.path.isdir(path) or data_file:
        return read_data(path, labelled=False)["all"]
    if suffix in IMAGE_EXTENSIONS or (modality == "image" and suffix not in TEXT_EXTENSIONS):
        return Samples("image", [path], None, [], [path], path)
    return _read_single_text(path)


def _share_classes(splits: dict[str, Samples]) -> dict[str, Samples]:
    """Re-index every split against the sorted union of their classes."""
    union = sort_classes(name for split in splits.values() for name in split.classes)
    return {name: split if split.classes == union else split.with_classes(union)
            for name, split in splits.items()}


# --------------------------------------------------------------------------- text helpers

def _decode_text(data: bytes, origin: str) -> str:
    """Decode one text sample (a whole file); a bad byte names its offset."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise DataError(f"{origin}: byte {nul} is NUL: a binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{origin}: byte {exc.start} (0x{data[exc.start]:02x}) is not "
                        "valid UTF-8") from None
    text = text.lstrip("\ufeff").strip()
    if not text:
        raise DataError(f"{origin}: empty text")
    return text


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _read_bytes(path: str, origin: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"{origin}: cannot read file ({exc.strerror or exc})") from None


def _read_single_text(path: str) -> Samples:
    text = _decode_text(_read_bytes(path, path), path)
    return Samples("text", [text], None, [], [path], path)


def _has_tab(path: str) -> bool:
    return b"\t" in _read_bytes(path, path)


# --------------------------------------------------------------------------- folders

def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")


def _subfolders(folder: str, walker: _Walker | None = None) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
    found = sorted(name for name in names
                   if not _is_hidden(name) and os.path.isdir(os.path.join(folder, name)))
    if walker is None:
        return found
    return [name for name in found if not walker.skip_link(os.path.join(folder, name))]


class _Walker:
    """Lists the files below the folders of one data set.

    Links are followed, but every real file and folder is read once: a link whose target
    lies inside the data set's own folder is skipped (its target is read where it is), a
    link to a folder already walked (a loop) is skipped, and a file reached twice is
    kept the first time.  :attr:`skipped_links` counts what was left out.  A folder that
    cannot be listed is refused, naming it.
    """

    def __init__(self, root: str):
        self.display = root
        self.root = os.path.realpath(root)
        self.seen_files: set[str] = set()
        self.seen_dirs: set[str] = set()
        self.skipped_links = 0

    def _inside_root(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def skip_link(self, path: str, real: str | None = None) -> bool:
        """Whether ``path`` (a link) is left out: it points back into the data set, or to a
        folder that holds the data set (a loop)."""
        if not os.path.islink(path):
            return False
        real = real or os.path.realpath(path)
        if self._inside_root(real) or self.root.startswith(real.rstrip(os.sep) + os.sep):
            self.skipped_links += 1
            return True
        return False

    def files(self, folder: str) -> list[str]:
        """Every non-hidden file below ``folder``, in a stable (sorted) order."""
        files: list[str] = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True,
                                                    onerror=_unlistable):
            real_dir = os.path.realpath(dirpath)
            if real_dir in self.seen_dirs:
                self.skipped_links += 1
                dirnames[:] = []
                continue
            self.seen_dirs.add(real_dir)
            kept = []
            for name in sorted(dirnames):
                path = os.path.join(dirpath, name)
                if not _is_hidden(name) and not self.skip_link(path):
                    kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                real = os.path.realpath(path)
                if self.skip_link(path, real):
                    continue
                if real in self.seen_files:
                    self.skipped_links += 1
                    continue
                self.seen_files.add(real)
                _refuse_special(path)
                files.append(path)
        return files

    def notes(self) -> list[str]:
        if not self.skipped_links:
            return []
        return [f"{self.display}: skipped {self.skipped_links} link(s) to files or folders "
                "already read (each file is read once)"]


def _refuse_special(path: str) -> None:
    """Refuse a named pipe, socket or device: reading one blocks or never ends.  (A path
    that cannot be stat'ed, such as a broken link, is left to the reader to name.)"""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{path}: not a regular file (a named pipe, socket or device)")


def _unlistable(exc: OSError) -> None:
    raise DataError(f"{exc.filename}: cannot list folder ({exc.strerror or exc}); "
                    "fix its permissions or move it out of the data folder")


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _split_folders(root: str, walker: _Walker) -> dict[str, str] | None:
    """``{"train": path, ...}`` when ``root`` is laid out in split folders, else ``None``."""
    subfolders = _subfolders(root, walker)
    found: dict[str, str] = {}
    for name in subfolders:
        split = SPLIT_ALIASES.get(name.lower())
        if split is None:
            continue
        if split in found:
            raise DataError(f"{root}: holds both '{os.path.basename(found[split])}' and "
                            f"'{name}' folders; keep one {split} split")
        found[split] = os.path.join(root, name)
    if not found:
        return None
    only_splits = len(found) == len(subfolders)
    if ("train" in found and len(found) > 1) or only_splits:
        return {split: found[split] for split in _SPLIT_ORDER if split in found}
    return None


def _read_folder(root: str, labelled: bool) -> dict[str, Samples]:
    walker = _Walker(root)
    if not labelled:
        result = {"all": _read_unlabelled_folder(root, walker)}
    else:
        splits = _split_folders(root, walker)
        if splits is None:
            result = {"all": _read_class_folder(root, walker)}
        else:
            result = {name: _read_class_folder(folder, walker) for name, folder in splits.items()}
    for split in result.values():
        split.notes = walker.notes()
    modalities = {split.modality for split in result.values()}
    if len(modalities) > 1:
        described = ", ".join(f"{name} holds {split.modality}s" for name, split in result.items())
        raise DataError(f"{root}: its splits differ in kind ({described})")
    return result


def _read_unlabelled_folder(root: str, walker: _Walker) -> Samples:
    files = walker.files(root)
    images = [path for path in files if _extension(path) in IMAGE_EXTENSIONS]
    if images:
        return Samples("image", images, None, [], list(images), root)
    texts = [path for path in files if _extension(path) in TEXT_EXTENSIONS]
    if texts:
        items = [_decode_text(_read_bytes(path, path), path) for path in texts]
        return Samples("text", items, None, [], texts, root)
    raise DataError(f"{root}: holds no image or .txt files")


def _read_class_folder(folder: str, walker: _Walker) -> Samples:
    """A folder with one subfolder per class (images at any depth, or .txt files)."""
    class_names = [name for name in _subfolders(folder, walker)
                   if name.lower() not in IGNORED_CLASS_FOLDERS]
    if not class_names:
        raise DataError(f"{folder}: found no class subfolders; a labelled folder needs one "
                        "subfolder per class")
    per_class = {name: walker.files(os.path.join(folder, name)) for name in class_names}
    any_images = any(_extension(path) in IMAGE_EXTENSIONS
                     for files in per_class.values() for path in files)
    if any_images:
        modality, wanted, noun = "image", IMAGE_EXTENSIONS, "images"
    else:
        any_texts = any(_extension(path) in TEXT_EXTENSIONS
                        for files in per_class.values() for path in files)
        if not any_texts:
            raise DataError(f"{folder}: its class folders hold no image or .txt files")
        modality, wanted, noun = "text", TEXT_EXTENSIONS, ".txt files"

    classes = sort_classes(class_names)
    items: list = []
    origins: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = [path for path in per_class[name] if _extension(path) in wanted]
        if not files:
            raise DataError(f"{os.path.join(folder, name)}: class folder holds no {noun}")
        if modality == "image":
            items.extend(files)
        else:
            items.extend(_decode_text(_read_bytes(path, path), path) for path in files)
        origins.extend(files)
        labels.extend([index] * len(files))
    return Samples(modality, items, np.asarray(labels, dtype=np.int64), classes, origins, folder)


# --------------------------------------------------------------------------- archives

def _read_archive(path: str, labelled: bool) -> dict[str, Samples]:
    """Text folders inside a tar archive, read as a stream (nothing is extracted)."""
    entries: list[tuple[list[str], str, bytes]] = []  # (folders, member name, content)
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not member.isfile() or not member.name.lower().endswith(".txt"):
                    continue
                parts = [part for part in member.name.split("/") if part not in ("", ".")]
                if not parts or any(part.startswith(".") for part in parts):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                entries.append((parts[:-1], member.name, handle.read()))
    except Exception as exc:  # tarfile raises TarError, OSError, EOFError, zlib / Type errors
        raise DataError(f"{path}: not a readable tar archive ({_describe(exc)})") from None
    if not entries:
        raise DataError(f"{path}: the archive holds no .txt files (archives are read as "
                        "text folders)")

    if not labelled:
        entries.sort(key=lambda entry: entry[1])
        items = [_decode_text(data, f"{path}: {name}") for _, name, data in entries]
        return {"all": Samples("text", items, None, [], [f"{path}: {name}" for _, name, _ in entries],
                               path)}

    # Entries below a split folder: split/class/.../file.txt.  Files directly inside a
    # split folder (IMDB's urls_pos.txt) and ignored classes are skipped.
    by_split: dict[str, list[tuple[str, str, bytes]]] = {}
    split_names: dict[str, set[str]] = {}
    plain: list[tuple[list[str], str, bytes]] = []
    for folders, name, data in entries:
        position = next((i for i, part in enumerate(folders) if part.lower() in SPLIT_ALIASES), None)
        if position is None:
            plain.append((folders, name, data))
            continue
        if len(folders) <= position + 1:
            continue
        class_name = folders[position + 1]
        if class_name.lower() in IGNORED_CLASS_FOLDERS:
            continue
        split = SPLIT_ALIASES[folders[position].lower()]
        split_names.setdefault(split, set()).add("/".join(folders[: position + 1]))
        by_split.setdefault(split, []).append((class_name, name, data))

    if by_split:
        for split, names in split_names.items():
            if len(names) > 1:
                raise DataError(f"{path}: holds several {split} folders "
                                f"({', '.join(sorted(names))}); keep one")
        return {split: _archive_samples(path, by_split[split])
                for split in _SPLIT_ORDER if split in by_split}

    if not plain:
        raise DataError(f"{path}: the archive's split folders hold no class folders of .txt files")
    # No split folders: the class is the first folder below the common prefix.
    prefix = list(plain[0][0])
    for folders, _, _ in plain[1:]:
        common = 0
        while common < min(len(prefix), len(folders)) and prefix[common] == folders[common]:
            common += 1
        del prefix[common:]
    depth = len(prefix)
    rows = [(folders[depth], name, data) for folders, name, data in plain
            if len(folders) > depth and folders[depth].lower() not in IGNORED_CLASS_FOLDERS]
    if not rows:
        if prefix:  # every file in one folder: that folder is the only class
            raise DataError(f"{path}: found only 1 class ({prefix[-1]!r}); need at least 2")
        raise DataError(f"{path}: the .txt files are at the archive's top level, not in class "
                        "folders")
    return {"all": _archive_samples(path, rows)}


def _archive_samples(path: str, rows: list[tuple[str, str, bytes]]) -> Samples:
    classes = sort_classes(class_name for class_name, _, _ in rows)
    position = {name: i for i, name in enumerate(classes)}
    rows = sorted(rows, key=lambda row: (position[row[0]], row[1]))
    origins = [f"{path}: {name}" for _, name, _ in rows]
    items = [_decode_text(data, origin) for (_, _, data), origin in zip(rows, origins)]
    labels = np.fromiter((position[class_name] for class_name, _, _ in rows),
                         dtype=np.int64, count=len(rows))
    return Samples("text", items, labels, classes, origins, path)


# --------------------------------------------------------------------------- npz

def _load_npz_arrays(path: str, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays ``x`` and (labelled) ``y`` of an ``.npz``, never unpickled; the file is closed
    whatever happens."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    with handle:
        try:
            archive = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable .npz file ({exc})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not an .npz archive (holds a single array)")
        with archive:
            names = list(archive.files)
            needed = ("x", "y") if labelled else ("x",)
            for key in needed:
                if key not in names:
                    raise DataError(f"{path}: missing array '{key}' (found: "
                                    f"{', '.join(names) or 'none'})")
            try:
                x = archive["x"]
                y = archive["y"] if labelled else None
            except ValueError as exc:  # object arrays need pickle, which is never used
                raise DataError(f"{path}: cannot load arrays without unpickling ({exc})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataError(f"{path}: corrupt .npz file ({exc})") from None
    for key, array in (("x", x), ("y", y)):
        if array is not None and not isinstance(array, np.ndarray):  # a member with no .npy header
            raise DataError(f"{path}: member '{key}' is not a numpy array (.npy)")
    return x, y


def _read_npz(path: str, labelled: bool) -> Samples:
    x, y = _load_npz_arrays(path, labelled)
    if x.dtype.kind in ("U", "S"):
        if x.ndim != 1:
            raise DataError(f"{path}: text array 'x' must be 1-d, not shape {x.shape}")
        modality = "text"
        items: list = []
        for i, value in enumerate(x.tolist()):
            text = (value.decode("utf-8", "replace") if isinstance(value, bytes) else value).strip()
            if not text:
                raise DataError(f"{path}: row {i}: empty text")
            items.append(text)
    else:
        if x.dtype != np.uint8:
            raise DataError(f"{path}: array 'x' must be uint8 images, not {x.dtype}")
        if x.ndim == 4 and x.shape[3] == 1:
            x = x[..., 0]
        if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (3, 4))):
            raise DataError(f"{path}: array 'x' has shape {x.shape}; expected (N, H, W) or "
                            "(N, H, W, C) with C in 1, 3, 4")
        modality = "image"
        items = list(x)
    origins = [f"{path}: row {i}" for i in range(len(items))]
    if not items:
        raise DataError(f"{path}: array 'x' holds no rows")
    if y is None:
        return Samples(modality, items, None, [], origins, path)

    if y.ndim != 1:
        raise DataError(f"{path}: array 'y' must be 1-d, not shape {y.shape}")
    if len(y) != len(items):
        raise DataError(f"{path}: 'x' has {len(items)} rows but 'y' has {len(y)}")
    if y.dtype.kind in ("i", "u", "b"):
        values = np.unique(y)
        classes = [str(int(v)) for v in values]
        labels = np.searchsorted(values, y).astype(np.int64)
    elif y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            raise DataError(f"{path}: row {int(bad[0])}: label {y[bad[0]]!r} is not an integer; "
                            "the labels look continuous, and transferkit classifies: give "
                            "integer classes")
        values = np.unique(y.astype(np.int64))
        classes = [str(int(v)) for v in values]
        labels = np.searchsorted(values, y.astype(np.int64)).astype(np.int64)
    elif y.dtype.kind in ("U", "S"):
        names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in y.tolist()]
        classes = sort_classes(names)
        position = {name: i for i, name in enumerate(classes)}
        labels = np.asarray([position[name] for name in names], dtype=np.int64)
    else:
        raise DataError(f"{path}: array 'y' must hold integer labels, not {y.dtype}")
    return Samples(modality, items, labels, classes, origins, path)


# --------------------------------------------------------------------------- tables

def _decode_table(data: bytes, path: str) -> str:
    nul = data.find(b"\0")
    if nul >= 0:  # UTF-16, or not a table at all
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}: line {line}: a NUL byte at offset {nul}; not a UTF-8 text "
                        "table (UTF-16, or a binary file?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path}: line {line}: byte 0x{data[exc.start]:02x} at column {column} "
                        "is not valid UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def _choose_delimiter(text: str, candidates: Sequence[str]) -> str:
    """The candidate that splits the first lines into the same number (>= 2) of fields."""
    lines = [line for line in text.split("\n")[:200] if line.strip()][:50]
    if len(candidates) == 1 or not lines:
        return candidates[0]
    best, best_score = candidates[0], -1.0
    for delimiter in candidates:
        if not any(delimiter in line for line in lines):
            continue
        counts = [_field_count(line, delimiter) for line in lines]
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        score = counts.count(mode) / len(counts)
        if score == 1.0:
            return delimiter
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _field_count(line: str, delimiter: str) -> int:
    """Fields of one line as :mod:`csv` splits it (0 when it cannot: a stray carriage
    return or quote)."""
    try:
        return len(next(csv.reader([line.rstrip("\r")], delimiter=delimiter), []))
    except csv.Error:
        return 0


def _table_rows(text: str, delimiter: str, path: str) -> list[tuple[int, list[str]]]:
    """``[(line number, fields), ...]`` without blank rows.

    Tab-separated tables are split plainly (no quoting: sentences hold quote characters);
    others are parsed by :mod:`csv`, where a quoted field may span lines (the row is then
    numbered by its first line).
    """
    rows: list[tuple[int, list[str]]] = []
    if delimiter == "\t":
        for number, line in enumerate(text.split("\n"), start=1):
            line = line[:-1] if line.endswith("\r") else line
            if line.strip():
                rows.append((number, line.split("\t")))
        return rows
    if csv.field_size_limit() < (1 << 27):
        csv.field_size_limit(1 << 27)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}: line {start}: {exc}") from None
        if any(field.strip() for field in fields):
            rows.append((start, fields))
        start = reader.line_num + 1
    return rows


def _looks_like_int(value: str) -> bool:
    value = value.strip()
    return bool(value) and value.lstrip("+-").isdigit()


def _has_header(rows: list[tuple[int, list[str]]], named: set[str]) -> bool:
    """Whether the first row names the columns.

    It does when it holds a column name asked for or a known column name that does not
    recur as a value in that column, or when its last field is unlike the other rows'
    labels (text over integer labels, or a value absent from a small set of labels).
    """
    first = [field.strip() for field in rows[0][1]]
    rest = [fields for _, fields in rows[1:]]
    known = set(LABEL_COLUMN_NAMES) | set(TEXT_COLUMN_NAMES) | set(IMAGE_COLUMN_NAMES)
    for index, value in enumerate(first):
        lowered = value.lower()
        if lowered in named:
            return True
        if lowered in known:
            column = {fields[index].strip().lower() for fields in rest if index < len(fields)}
            if lowered not in column:
                return True
    if not rest:
        return False
    last = [fields[-1].strip() for fields in rest if fields]
    if last and all(_looks_like_int(value) for value in last):
        return not _looks_like_int(first[-1])
    distinct = set(last)
    return len(last) >= 4 and first[-1] not in distinct and len(distinct) <= max(2, len(last) // 2)


def _column_index(names: list[str], wanted: str, path: str, first_row: list[str] | None) -> int:
    """Index of the column named ``wanted``; ``first_row`` is given when there is no header."""
    lowered = [name.strip().lower() for name in names]
    if wanted.strip().lower() in lowered:
        return lowered.index(wanted.strip().lower())
    if first_row is None:
        raise DataError(f"{path}: no column named {wanted!r}; the columns are: {', '.join(names)}")
    shown = ", ".join(field.strip()[:30] + ("..." if len(field.strip()) > 30 else "")
                      for field in first_row)
    raise DataError(f"{path}: no column named {wanted!r}; the first line names no such column "
                    f"(it reads: {shown})")


def _read_table(path: str, *, text_column: str | None, image_column: str | None,
                label_column: str | None, labelled: bool) -> Samples:
    text = _decode_table(_read_bytes(path, path), path)
    rows = _table_rows(text, _table_delimiter(text, path, labelled), path)
    if not rows:
        raise DataError(f"{path}: the file holds no rows")
    named = {name.strip().lower() for name in (text_column, image_column, label_column) if name}
    header = _has_header(rows, named)
    names, data_rows = _table_columns(rows, header, path)
    no_header = None if header else rows[0][1]
    label_index = _label_index(names, header, label_column, labelled, path, no_header)
    input_index = _input_index(names, header, data_rows, text_column or image_column,
                               label_index, path, no_header)
    values = [(number, fields[input_index].strip()) for number, fields in data_rows]
    modality = _table_modality(values, text_column, image_column)
    items, origins = _table_items(values, modality, path)
    if not labelled or label_index is None:
        return Samples(modality, items, None, [], origins, path)
    labels, classes = _table_labels(data_rows, label_index, path)
    return Samples(modality, items, labels, classes, origins, path)


def _table_delimiter(text: str, path: str, labelled: bool) -> str:
    """``,``-like for ``.csv`` (sniffed), a tab for ``.tsv`` / ``.txt``."""
    suffix = _extension(path)
    if suffix == ".csv":
        return _choose_delimiter(text, _TABLE_DELIMITERS)
    if suffix == ".txt" and labelled and "\t" not in text:
        raise DataError(f"{path}: a .txt file is read as tab-separated rows (text<TAB>label) "
                        "but it holds no tab; for one sample per file use a folder with "
                        "one subfolder per class")
    return "\t"


def _table_columns(rows: list[tuple[int, list[str]]], header: bool,
                   path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Column names (from the header row, else ``column N``) and the data rows, each checked
    to have as many fields as the first row."""
    width = len(rows[0][1])
    if header:
        names = [field.strip() or f"column {i + 1}" for i, field in enumerate(rows[0][1])]
        data_rows = rows[1:]
    else:
        names = [f"column {i + 1}" for i in range(width)]
        data_rows = rows
    for number, fields in data_rows:
        if len(fields) != width:
            raise DataError(f"{path}: line {number}: expected {width} field"
                            f"{'s' if width != 1 else ''}, got {len(fields)}")
    if not data_rows:
        raise DataError(f"{path}: the file holds a header row but no data rows")
    return names, data_rows


def _label_index(names: list[str], header: bool, label_column: str | None, labelled: bool,
                 path: str, no_header: list[str] | None) -> int | None:
    """The label column: named, else a header called like a label, else the last column."""
    label_index: int | None = None
    if label_column:
        label_index = _column_index(names, label_column, path, no_header)
    elif header:
        lowered = [name.lower() for name in names]
        label_index = next((i for i, name in enumerate(lowered) if name in LABEL_COLUMN_NAMES), None)
    if labelled and label_index is None:
        label_index = len(names) - 1
    if labelled and len(names) < 2:
        raise DataError(f"{path}: expected at least 2 columns (input and label), found 1")
    return label_index


def _input_index(names: list[str], header: bool, data_rows: list[tuple[int, list[str]]],
                 input_name: str | None, label_index: int | None, path: str,
                 no_header: list[str] | None) -> int:
    """The input column: named, else a header called like an input, else the longest column."""
    if input_name:
        input_index = _column_index(names, input_name, path, no_header)
    else:
        candidates = [i for i in range(len(names)) if i != label_index]
        if not candidates:
            raise DataError(f"{path}: no input column besides the label column")
        lowered = [name.lower() for name in names]
        input_names = set(TEXT_COLUMN_NAMES) | set(IMAGE_COLUMN_NAMES)
        input_index = next((i for i in candidates if header and lowered[i] in input_names), -1)
        if input_index < 0:
            lengths = {i: sum(len(fields[i].strip()) for _, fields in data_rows) for i in candidates}
            input_index = max(candidates, key=lambda i: (lengths[i], -i))
    if label_index is not None and input_index == label_index:
        raise DataError(f"{path}: the input column and the label column are both "
                        f"{names[input_index]!r}")
    return input_index


def _table_modality(values: list[tuple[int, str]], text_column: str | None,
                    image_column: str | None) -> str:
    """``image`` when so named or when most filled values are image paths, else ``text``."""
    if image_column:
        return "image"
    if text_column:
        return "text"
    filled = [value for _, value in values if value]
    images = sum(_extension(value) in IMAGE_EXTENSIONS for value in filled)
    return "image" if filled and images * 2 > len(filled) else "text"


def _table_items(values: list[tuple[int, str]], modality: str,
                 path: str) -> tuple[list, list[str]]:
    """Texts, or image paths resolved beside the table (each checked to exist), and origins."""
    base = os.path.dirname(path)
    items: list = []
    origins: list[str] = []
    for number, value in values:
        if not value:
            what = "image path" if modality == "image" else "text"
            raise DataError(f"{path}: line {number}: empty {what}")
        if modality == "image":
            image_path = value if os.path.isabs(value) else os.path.join(base, value)
            if not os.path.isfile(image_path):
                raise DataError(f"{path}: line {number}: image file not found: {value}")
            items.append(image_path)
            origins.append(f"{path}: line {number}: {value}")
        else:
            items.append(value)
            origins.append(f"{path}: line {number}")
    return items, origins


def _table_labels(data_rows: list[tuple[int, list[str]]], label_index: int,
                  path: str) -> tuple[np.ndarray, list[str]]:
    """Label ids and the sorted class names of the label column (no label may be empty)."""
    label_names: list[str] = []
    for number, fields in data_rows:
        label = fields[label_index].strip()
        if not label:
            raise DataError(f"{path}: line {number}: empty label")
        label_names.append(label)
    _refuse_continuous(data_rows, label_names, path)
    classes = sort_classes(label_names)
    position = {name: i for i, name in enumerate(classes)}
    return np.asarray([position[name] for name in label_names], dtype=np.int64), classes


def _refuse_continuous(data_rows: list[tuple[int, list[str]]], label_names: list[str],
                       path: str) -> None:
    """Refuse numeric labels that are mostly distinct and not all integers: a regression
    target, not classes."""
    try:
        values = [float(name) for name in label_names]
    except ValueError:
        return
    fractional = [i for i, v in enumerate(values) if not float(v).is_integer()]
    distinct = len(set(label_names))
    if fractional and distinct * 2 > len(label_names):
        first = fractional[0]
        raise DataError(f"{path}: the labels look continuous ({distinct} distinct numbers in "
                        f"{len(label_names)} rows; line {data_rows[first][0]}: "
                        f"{label_names[first]!r}); transferkit classifies: give class names "
                        "or bin the values into classes")


def read_domains(path: str | os.PathLike, domain_column: str, *, text_column: str | None = None,
                 image_column: str | None = None, label_column: str | None = None,
                 labelled: bool = True) -> dict[str, Samples]:
    """Read one CSV/TSV whose column ``domain_column`` names each row's domain; return the
    samples of every domain (one class list for all, so labels agree across domains).

    Raises:
        DataError: not a table, no such column, or an empty domain value (naming the line).
    """
    path = os.fspath(path)
    if _extension(path) not in (".csv", ".tsv", ".txt"):
        raise DataError(f"{path}: --domain-column needs a CSV/TSV table")
    text = _decode_table(_read_bytes(path, path), path)
    delimiter = _choose_delimiter(text, _TABLE_DELIMITERS) if _extension(path) == ".csv" else "\t"
    rows = _table_rows(text, delimiter, path)
    named = {n.strip().lower() for n in (text_column, image_column, label_column, domain_column) if n}
    if not rows or not _has_header(rows, named):
        raise DataError(f"{path}: --domain-column needs a header row naming the columns")
    names = [field.strip() for field in rows[0][1]]
    index = _column_index(names, domain_column, path, None)
    by_line: dict[int, str] = {}
    for number, fields in rows[1:]:
        value = fields[index].strip() if index < len(fields) else ""
        if not value:
            raise DataError(f"{path}: line {number}: empty domain ({domain_column!r})")
        by_line[number] = value
    samples = _read_table(path, text_column=text_column, image_column=image_column,
                          label_column=label_column, labelled=labelled)
    lines = [int(origin.split(": line ", 1)[1].split(":", 1)[0]) for origin in samples.origins]
    out: dict[str, Samples] = {}
    for name in sorted(set(by_line.values())):
        out[name] = samples.subset([i for i, n in enumerate(lines) if by_line[n] == name])
    return out


__all__ = ["IMAGE_EXTENSIONS", "read_data", "read_domains", "read_inputs"]
