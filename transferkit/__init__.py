"""transferkit: transfer learning from pretrained image and text backbones."""

__version__ = "0.1.0"

from .api import TrainedModel, TransferClassifier, fit, load  # noqa: E402

__all__ = ["TrainedModel", "TransferClassifier", "fit", "load", "__version__"]
