# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd dhcp6ha} plugin's options and service:

    twistd -n dhcp6ha --config etc/dhcp6ha.ini

The configuration is read and validated while the options are parsed, so a
broken file stops C{twistd} with a message naming the file, section and key
(and a non-zero exit status) before anything is opened or bound.  The same
goes for the TLS certificate, key and CA of each C{[failover:NAME]} section
(the failover pair member of C{etc/primary.ini} or C{etc/secondary.ini}):
they are read and checked then, and a file that cannot be used is named
with what is wrong with it.
"""

from __future__ import annotations

import gc
import sys

from twisted.python import usage

from dhcp6ha import service
from dhcp6ha.config import ConfigError, ServerConfig, parseConfig
from dhcp6ha.failover.tls import TLSMaterial

__all__ = ["GC_THRESHOLDS", "Options", "makeService", "tuneGarbageCollector"]

GC_THRESHOLDS = (10_000, 20, 20)
"""
The cyclic garbage collector's thresholds in the server process (Python's
default: 700, 10, 10).  An exchange allocates a few hundred objects, nearly
all freed by reference counting; with the default, the youngest generation
is scanned every few exchanges, which cost about 8% of an exchange's time.
"""


def tuneGarbageCollector() -> None:
    """
    Tune the cyclic garbage collector for a long-running server: what exists
    once the server has started (modules, configuration, services) is
    frozen, so that full collections do not scan it again, and collections
    run less often (L{GC_THRESHOLDS}).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Options(usage.Options):
    """
    C{twistd dhcp6ha} options.

    @ivar serverConfig: the validated configuration, once parsed.
    @ivar tlsMaterial: the failover relationships' TLS material by name,
        once parsed (empty without failover).
    """

    synopsis = "--config FILE [--log-exchanges]"
    longdesc = (
        "Run the dhcp6ha DHCPv6 server described by the ini file FILE"
        " (see etc/dhcp6ha.ini).  Stop it with SIGTERM: replies whose leases"
        " are being written are sent and the lease database is closed cleanly."
    )
    optParameters = [
        ["config", "c", None, "The configuration file (ini), e.g. etc/dhcp6ha.ini."],
    ]
    optFlags = [
        ["log-exchanges", None, "Log every client exchange (at debug level)."],
    ]

    serverConfig: ServerConfig | None = None
    tlsMaterial: dict[str, TLSMaterial] | None = None

    def postOptions(self) -> None:
        path = self["config"]
        if path is None:
            raise usage.UsageError("--config FILE is required")
        try:
            config = parseConfig(path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        try:
            self.tlsMaterial = service.loadTLSMaterial(config)
        except service.StartupError as e:
            raise usage.UsageError(str(e)) from None
        self.serverConfig = config


def makeService(options: Options) -> service.ServerService:
    """
    The server described by C{options}' configuration (see
    L{dhcp6ha.service.makeService}); started by C{twistd}.
    """
    if options.serverConfig is None:
        options.postOptions()
    assert options.serverConfig is not None
    try:
        server = service.makeService(
            options.serverConfig,
            logExchanges=bool(options["log-exchanges"]),
            tlsMaterial=options.tlsMaterial,
        )
    except service.StartupError as e:
        # Before twistd's logging starts: say it on stderr.
        sys.stderr.write("dhcp6ha cannot start: " + str(e) + "\n")
        raise SystemExit(1) from None
    server.exitOnStartupError = True
    server.onStarted = tuneGarbageCollector
    return server
