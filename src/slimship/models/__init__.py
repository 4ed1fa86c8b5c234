"""Model sources: timm architectures, pretrained weights from files or packages, foreign layouts."""

from slimship.models.factory import BuiltModel, count_params, create_model
from slimship.models.weights import WEIGHT_PACKAGES

__all__ = ["BuiltModel", "create_model", "count_params", "WEIGHT_PACKAGES"]
