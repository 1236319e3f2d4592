"""Object detection: a detection head on a pretrained backbone, trained by the same engine,
strategies and bundles as a classifier (see docs/detection.md)."""
