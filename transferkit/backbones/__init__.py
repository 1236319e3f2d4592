"""Pretrained backbones behind one interface, registered by name.

Importing the package imports the built-in backbone modules, which register their names; the
registry in :mod:`.base` itself imports none of them (no import cycle).  Each module keeps its
heavy libraries (timm, transformers) lazy, so this stays cheap.
"""

from . import combined, digits, image, text, wordvec  # noqa: F401  (registers the built-in backbones)
from .combined import PREFIX as COMBINED_PREFIX, combined_name
from .base import (FAMILIES, Backbone, TokenLayout, ValueProjection, backbone_modality,
                   build_backbone, build_from_spec, list_backbones, register_backbone)

__all__ = ["COMBINED_PREFIX", "FAMILIES", "Backbone", "TokenLayout", "ValueProjection",
           "backbone_modality", "build_backbone", "build_from_spec", "combined_name",
           "list_backbones", "register_backbone"]
