"""transferkit: transfer learning from pretrained image and text backbones."""

from .api import TrainedModel, TransferClassifier, fit, load
from .version import __version__

__all__ = ["TrainedModel", "TransferClassifier", "fit", "load", "__version__"]
