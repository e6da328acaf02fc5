"""The event schemas every service shares (see :mod:`system.events.schemas`, whose
``__all__`` is this package's)."""

from system.events import schemas
from system.events.schemas import *  # noqa: F403 - re-exports exactly schemas.__all__

__all__ = schemas.__all__
