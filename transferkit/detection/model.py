"""The detector: a pretrained backbone's last stages, a feature pyramid, and torchvision's
FCOS head (anchor-free: one location per cell; focal loss, GIoU box loss, centre-ness).

:class:`DetectionHead` holds every new tensor (the pyramid and the FCOS head), so the
strategies see it as ``model.head`` and train, freeze and save it exactly as they do a
classifier; the backbone stays ``model.backbone``.  The head reuses torchvision's
:class:`~torchvision.models.detection.FCOS` for its target assignment (centre sampling, scale
ranges per level), its losses and its decoding with per-class NMS: that object is built
with an empty stand-in for the backbone, and only its head holds tensors.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..heads import TransferModel
from ..settings import Settings, setting


@dataclass
class DetectionSettings(Settings):
    """The detection head's shape and decoding, as a run sets them (the ``detection``
    section: ``--det-width 128 --det-convs 4 --det-levels 3``)."""

    section: ClassVar[str] = "detection"

    width: int = setting(64, "detection: channels of the feature pyramid and the FCOS head "
                         "(a multiple of 32)", flag="--det-width", flat="det_width")
    convs: int = setting(2, "detection: conv layers of each FCOS branch (torchvision: 4)",
                         flag="--det-convs", flat="det_convs")
    levels: int = setting(3, "detection: backbone stages the feature pyramid reads (the last "
                          "N; 4 adds the stride-4 map)", flag="--det-levels", flat="det_levels")
    score_threshold: float = setting(0.05, "detection: lowest score kept before NMS",
                                     flag="--det-score-threshold", flat="det_score_threshold")
    nms_threshold: float = setting(0.6, "detection: IoU above which NMS drops a box of the "
                                   "same class", flag="--det-nms-threshold",
                                   flat="det_nms_threshold")
    detections: int = setting(100, "detection: most boxes kept per image",
                              flag="--det-max-boxes", flat="det_max_boxes")

    def validate(self):
        if self.width < 32 or self.width % 32:
            raise ConfigError(f"--det-width must be a multiple of 32, got {self.width}")
        for flag, value in (("--det-convs", self.convs), ("--det-levels", self.levels),
                            ("--det-max-boxes", self.detections)):
            if value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ConfigError(f"--det-score-threshold must be in [0, 1), got "
                              f"{self.score_threshold}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ConfigError(f"--det-nms-threshold must be in (0, 1], got {self.nms_threshold}")
        return self


@dataclass
class DetectionHeadConfig(DetectionSettings):
    """The detection head's settings (kept in the bundle): a run's ``detection`` section
    plus the head's kind and the square side every image is resized to."""

    section: ClassVar[str] = "detection_head"

    kind: str = setting("fcos", "detection head (torchvision FCOS over a feature pyramid)")
    image_size: int = setting(128, "side of the square every image is resized to")

    def validate(self) -> "DetectionHeadConfig":
        if self.kind != "fcos":
            raise ConfigError(f"unknown detection head {self.kind!r}; known: fcos")
        super().validate()
        if self.image_size < 32:
            raise ConfigError(f"detection image size must be >= 32, got {self.image_size}")
        return self


class _NoBackbone(nn.Module):
    """What torchvision's FCOS is given as its backbone: the features come from outside."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels

    def forward(self, x):  # pragma: no cover - never called
        raise RuntimeError("the detection head reads feature maps given to it")


class DetectionHead(nn.Module):
    """Feature pyramid + FCOS head over ``levels`` backbone maps of the given channels and
    strides; :meth:`loss` for training, :meth:`detect` for boxes."""

    reads = "maps"

    def __init__(self, cfg: DetectionHeadConfig, maps: list[tuple[int, int]], num_classes: int):
        super().__init__()
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.fcos import FCOS, FCOSHead
        from torchvision.ops import FeaturePyramidNetwork

        self.cfg = cfg.validate()
        self.strides = [s for _, s in maps]
        self.fpn = FeaturePyramidNetwork([c for c, _ in maps], cfg.width)
        anchors = AnchorGenerator(tuple((s,) for s in self.strides),
                                  ((1.0,),) * len(self.strides))
        size = cfg.image_size
        self.fcos = FCOS(_NoBackbone(cfg.width), num_classes, min_size=size, max_size=size,
                         anchor_generator=anchors,
                         head=FCOSHead(cfg.width, 1, num_classes, num_convs=cfg.convs),
                         score_thresh=cfg.score_threshold, nms_thresh=cfg.nms_threshold,
                         detections_per_img=cfg.detections)

    def pyramid(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps))).values())

    def _anchors(self, feats: list[torch.Tensor], batch: int):
        from torchvision.models.detection.image_list import ImageList

        size = self.cfg.image_size
        shape = feats[0].new_zeros(1).expand(batch, 3, size, size)
        return self.fcos.anchor_generator(ImageList(shape, [(size, size)] * batch), feats)

    def loss(self, maps: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
             ) -> dict[str, torch.Tensor]:
        """FCOS's loss terms (classification, box regression, centre-ness) of a batch whose
        ``targets`` hold ``boxes`` (in the pixels of the resized square) and ``labels``."""
        feats = self.pyramid(maps)
        out = self.fcos.head(feats)
        anchors = self._anchors(feats, len(targets))
        per_level = [f.size(2) * f.size(3) for f in feats]
        return self.fcos.compute_loss(targets, out, anchors, per_level)

    def detect(self, maps: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (in the pixels of the resized square), ``scores``, ``labels``."""
        feats = self.pyramid(maps)
        out = self.fcos.head(feats)
        batch = feats[0].shape[0]
        anchors = self._anchors(feats, batch)
        per_level = [f.size(2) * f.size(3) for f in feats]
        split = {k: list(v.split(per_level, dim=1)) for k, v in out.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        size = self.cfg.image_size
        return self.fcos.postprocess_detections(split, split_anchors, [(size, size)] * batch)


class DetectionModel(TransferModel):
    """A backbone and a :class:`DetectionHead`; ``forward(images) -> detections``."""

    task = "detection"
    #: images are converted to one channel, fed as three (``--grayscale``), in training
    #: and in prediction alike
    grayscale = False

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.feature_maps(x, self.head.cfg.levels)

    @property
    def features_fixed(self) -> bool:
        return False  # the head reads feature maps; the trainer keeps them itself

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.head.detect(self.maps(x))


def build_detector(backbone, cfg: DetectionHeadConfig, classes: list[str]) -> DetectionModel:
    """The backbone with a new detection head over its last ``cfg.levels`` stages."""
    if backbone.modality != "image":
        raise ConfigError(f"detection needs an image backbone; {backbone.name!r} takes "
                          f"{backbone.modality}")
    head = DetectionHead(cfg, backbone.feature_map_info(cfg.levels), len(classes))
    return DetectionModel(backbone, head, classes)


def normalise(images_uint8: torch.Tensor, preprocess: dict) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float, normalised as the backbone wants."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(preprocess["mean"], dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(preprocess["std"], dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
