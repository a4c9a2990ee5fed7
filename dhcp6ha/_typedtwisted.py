# -*- test-case-name: tests.test_typedtwisted -*-
"""
Typed views of the untyped parts of Twisted's service API that several
modules call (C{mypy --strict}, with no override list).

Each name is the Twisted function itself, cast to its signature: calling
C{serviceStart(self)} is calling C{Service.startService(self)}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = [
    "failureOf",
    "multiServiceInit",
    "multiServiceStart",
    "multiServiceStop",
    "serviceStart",
    "serviceStop",
    "setName",
    "setServiceParent",
]

serviceStart = cast(Callable[[Service], None], Service.startService)
"""C{Service.startService}: marks the service running."""

serviceStop = cast(Callable[[Service], None], Service.stopService)
"""C{Service.stopService}: marks the service stopped."""

setName = cast(Callable[[Service, str], None], Service.setName)
"""C{Service.setName}."""

setServiceParent = cast(Callable[[Service, MultiService], object], Service.setServiceParent)
"""C{Service.setServiceParent}."""

multiServiceInit = cast(Callable[[MultiService], None], MultiService.__init__)
"""C{MultiService.__init__}."""

multiServiceStart = cast(Callable[[MultiService], None], MultiService.startService)
"""C{MultiService.startService}: starts the children, in order."""

multiServiceStop = cast(Callable[[MultiService], "Deferred[object]"], MultiService.stopService)
"""C{MultiService.stopService}: stops the children, fired once all have stopped."""

failureOf = cast(Callable[[BaseException], Failure], Failure)
"""C{Failure(exception)}: an exception caught elsewhere (another thread), its
traceback kept."""
