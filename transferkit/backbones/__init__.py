"""Pretrained backbones behind one interface, registered by name."""

from .base import (Backbone, backbone_modality, build_backbone, build_from_spec, list_backbones,
                   register_backbone)

__all__ = ["Backbone", "backbone_modality", "build_backbone", "build_from_spec", "list_backbones",
           "register_backbone"]
