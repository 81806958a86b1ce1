"""Vision encoders; importing this package registers every built-in encoder."""

from vlmlab.models.vision import ssm, vit  # noqa: F401
from vlmlab.models.vision.base import VisionEncoder, VisionFeatures  # noqa: F401
