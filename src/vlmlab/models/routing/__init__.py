"""Vision-token routing strategies; importing this package registers every built-in strategy."""

from vlmlab.models.routing import dpvr, fastv, full  # noqa: F401
from vlmlab.models.routing.base import RoutingStrategy  # noqa: F401
