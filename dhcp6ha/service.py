# -*- test-case-name: tests.test_service -*-
"""
The embedding API: L{makeService} builds the whole server as one
L{MultiService}.

    from dhcp6ha.config import parseConfig
    from dhcp6ha.service import makeService

    makeService(parseConfig("etc/dhcp6ha.ini")).setServiceParent(application)

What runs, in start order (stopped in the reverse order, each one only after
the one before it has finished stopping):

  1. C{"leases"} (L{LeaseStoreService}): opens the lease database on start;
     on stop, flushes every committed change and closes it.
  2. C{"dhcpv6"} (L{DHCPv6Service}): loads or creates the server DUID, builds
     the engine with an allocation policy, binds the UDP port, joins
     C{ff02::1:2} on the configured interfaces and runs expiry reclamation.
     On stop it stops reclamation, stops reading datagrams, waits for the
     commits in flight (and sends their replies), then closes the port.
  3. C{"control"} (L{ControlService}), only when C{[server] control-socket}
     is set: the operator control socket of C{dhcp6ha-ctl} (mode 0600).  Its
     L{ControlTarget}, C{ServerService.controlTarget} (made even with no
     control socket), is where failover relationships register
     (C{addRelationship}).

Nothing is opened or bound before C{startService}: under C{twistd} that is
after daemonizing, so the store's writer thread survives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any
from uuid import uuid4

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from dhcp6ha.allocation import StandalonePolicy
from dhcp6ha.config import ServerConfig
from dhcp6ha.control import ControlService, ControlTarget
from dhcp6ha.engine import Engine
from dhcp6ha.interfaces import IAllocationPolicy, ILeaseStore
from dhcp6ha.leases.sqlite import SQLiteLeaseStore
from dhcp6ha.message import (
    HARDWARE_TYPE_ETHERNET,
    describeDuid,
    duidFromText,
    duidLLT,
    duidTime,
    duidToText,
    duidUUID,
)
from dhcp6ha.server import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    DHCPv6Port,
    DHCPv6ServerProtocol,
    Reclaimer,
    ServerEngine,
    listenDHCPv6,
)

__all__ = [
    "SERVER_DUID_KEY",
    "DHCPv6Service",
    "LeaseStoreService",
    "ServerService",
    "StartupError",
    "findLinkLayerAddress",
    "loadServerDuid",
    "makeService",
]

SERVER_DUID_KEY = "server-duid"
"""The store metadata key holding the generated server DUID (colon hex)."""

RECLAIM_LIMIT = 1000
"""Most bindings reclaimed in one transaction."""

PolicyFactory = Callable[[ServerConfig, ILeaseStore], IAllocationPolicy]
EngineFactory = Callable[[ServerConfig, ILeaseStore, IAllocationPolicy, bytes], ServerEngine]
Listen = Callable[[Any, int, DHCPv6ServerProtocol, str], DHCPv6Port]
StoreFactory = Callable[[], ILeaseStore]


class StartupError(Exception):
    """The server cannot start; the message says why, for an operator."""


def standalonePolicy(config: ServerConfig, store: ILeaseStore) -> IAllocationPolicy:
    """The policy of a server with no failover partner."""
    return StandalonePolicy()


def findLinkLayerAddress(
    preferred: Sequence[str] = (), sysfs: str = "/sys/class/net"
) -> bytes | None:
    """
    An Ethernet MAC address of this machine, for a DUID-LLT: from the first
    of C{preferred} interfaces that has one, else from the first interface
    by name.  C{None} if there is none (e.g. not Linux).
    """
    try:
        names = sorted(os.listdir(sysfs))
    except OSError:
        return None
    ordered = [n for n in preferred if n in names] + [n for n in names if n not in preferred]
    for name in ordered:
        try:
            with open(os.path.join(sysfs, name, "type")) as f:
                if f.read().strip() != "1":  # ARPHRD_ETHER
                    continue
            with open(os.path.join(sysfs, name, "address")) as f:
                mac = bytes.fromhex(f.read().strip().replace(":", ""))
        except (OSError, ValueError):
            continue
        if len(mac) == 6 and any(mac) and not mac[0] & 1:
            return mac
    return None


def loadServerDuid(
    config: ServerConfig,
    store: ILeaseStore,
    now: float,
    linkLayerAddress: Callable[[], bytes | None],
) -> tuple[bytes, Deferred[None] | None]:
    """
    This server's DUID: the configured one, else the one kept in the store,
    else a new one (DUID-LLT from C{linkLayerAddress()}, or DUID-UUID when
    there is none) which is stored.

    @return: the DUID, and the Deferred of its storing when it is new (the
        server must not answer before it fires), else C{None}.
    @raise StartupError: the stored DUID is not valid.
    """
    if config.server.duid is not None:
        return config.server.duid, None
    stored = store.getMetadata(SERVER_DUID_KEY)
    if stored is not None:
        try:
            return duidFromText(stored), None
        except ValueError as e:
            raise StartupError(
                f"{config.server.database}: the stored server DUID is invalid ({e});"
                " set [server] duid in " + config.path
            ) from None
    mac = linkLayerAddress()
    if mac is not None:
        duid = duidLLT(HARDWARE_TYPE_ETHERNET, duidTime(now), mac)
    else:
        duid = duidUUID(uuid4())
    return duid, store.setMetadata(SERVER_DUID_KEY, duidToText(duid))


class LeaseStoreService(Service):
    """
    Owns the lease store: opened by C{startService}, flushed and closed by
    C{stopService}.

    @ivar store: the open store, or C{None} when not running.
    """

    log = Logger()

    def __init__(self, openStore: StoreFactory, description: str) -> None:
        """
        @param openStore: opens the store (e.g. C{SQLiteLeaseStore(path, ...)}).
        @param description: what to call it in errors (the database path).
        """
        self._openStore = openStore
        self._description = description
        self.store: ILeaseStore | None = None

    def startService(self) -> None:
        try:
            self.store = self._openStore()
        except Exception as e:
            raise StartupError(f"cannot open the lease database {self._description}: {e}") from e
        Service.startService(self)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        store, self.store = self.store, None
        if store is None:
            return succeed(None)
        return Deferred.fromCoroutine(self._close(store))

    async def _close(self, store: ILeaseStore) -> None:
        try:
            await store.close()
        except Exception:
            self.log.failure("Closing the lease database {path} failed", path=self._description)
            return
        self.log.info("Lease database {path} closed", path=self._description)


class DHCPv6Service(Service):
    """
    The client-facing server: DUID, engine, UDP port, multicast groups and
    expiry reclamation, on top of a running L{LeaseStoreService}.

    @ivar protocol: the L{DHCPv6ServerProtocol} while running.
    @ivar port: the listening port while running.
    @ivar reclaimer: the L{Reclaimer} while running.
    @ivar serverDuid: this server's DUID once started.
    @ivar started: when it last started (C{reactor.seconds()}), or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        config: ServerConfig,
        reactor: Any,
        leases: LeaseStoreService,
        *,
        policyFactory: PolicyFactory = standalonePolicy,
        engineFactory: EngineFactory = Engine,
        listen: Listen = listenDHCPv6,
        linkLayerAddress: Callable[[], bytes | None] | None = None,
        logExchanges: bool = False,
    ) -> None:
        """
        @param reactor: the clock for timestamps and timers, and what the
            port is bound with (C{listen}).
        @param policyFactory: makes the allocation policy (standalone now;
            a failover endpoint's policy later).
        @param listen: binds the port: C{listen(reactor, port, protocol,
            address)}.
        @param linkLayerAddress: finds a MAC for a new DUID-LLT (default:
            L{findLinkLayerAddress} over the configured interfaces first).
        """
        self.config = config
        self.reactor = reactor
        self.leases = leases
        self._policyFactory = policyFactory
        self._engineFactory = engineFactory
        self._listen = listen
        if linkLayerAddress is None:
            interfaces = config.server.interfaces

            def linkLayerAddress() -> bytes | None:
                return findLinkLayerAddress(interfaces)

        self._linkLayerAddress = linkLayerAddress
        self._logExchanges = logExchanges
        self.protocol: DHCPv6ServerProtocol | None = None
        self.port: DHCPv6Port | None = None
        self.reclaimer: Reclaimer | None = None
        self.serverDuid: bytes | None = None
        self.started: float | None = None

    def startService(self) -> None:
        store = self.leases.store
        if store is None:
            raise StartupError("the lease database is not open")
        server = self.config.server
        duid, storing = loadServerDuid(
            self.config, store, self.reactor.seconds(), self._linkLayerAddress
        )
        policy = self._policyFactory(self.config, store)
        engine = self._engineFactory(self.config, store, policy, duid)
        protocol = DHCPv6ServerProtocol(
            engine, store, policy, self.reactor, logExchanges=self._logExchanges
        )
        protocol.serving = storing is None
        try:
            port = self._listen(self.reactor, server.port, protocol, str(server.address))
        except Exception as e:
            raise StartupError(f"cannot listen on [{server.address}]:{server.port}: {e}") from e
        group = str(ALL_DHCP_RELAY_AGENTS_AND_SERVERS)
        for name in server.interfaces:
            try:
                port.joinGroupOn(group, name)
            except OSError as e:
                port.stopListening()
                raise StartupError(
                    f"{self.config.path}: [server] interfaces: cannot join {group}"
                    f" on {name}: {e.strerror or e}"
                ) from e
        if server.interfaces and not server.address.is_unspecified:
            self.log.warn(
                "Listening on {address}, not ::: multicast from directly attached clients"
                " on {interfaces} will not be received",
                address=str(server.address),
                interfaces=", ".join(server.interfaces),
            )
        self.serverDuid = duid
        self.protocol = protocol
        self.port = port
        self.reclaimer = Reclaimer(
            engine, store, policy, self.reactor, server.reclaim_interval, RECLAIM_LIMIT
        )
        if storing is not None:
            storing.addCallbacks(self._duidStored, self._duidNotStored, errbackArgs=(duid,))
        self.reclaimer.start()
        self.started = self.reactor.seconds()
        Service.startService(self)
        self.log.info(
            "DHCPv6 server {duid} listening on [{address}]:{port}{groups}",
            duid=describeDuid(duid),
            address=str(server.address),
            port=port.getHost().port,
            groups=(" and on " + group + " on " + ", ".join(server.interfaces))
            if server.interfaces
            else " (relayed clients only)",
        )

    def _duidStored(self, _: None) -> None:
        if self.protocol is not None:
            self.protocol.serving = True
        self.log.info(
            "New server DUID {duid} stored in {path}",
            duid=duidToText(self.serverDuid or b""),
            path=self.config.server.database,
        )

    def _duidNotStored(self, failure: Any, duid: bytes) -> None:
        self.log.failure(
            "Could not store the new server DUID {duid}: not answering clients",
            failure,
            duid=duidToText(duid),
        )

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        reclaimer, self.reclaimer = self.reclaimer, None
        protocol, self.protocol = self.protocol, None
        port, self.port = self.port, None
        if reclaimer is not None:
            await reclaimer.stop()
        if protocol is not None:
            await protocol.drain()
        if port is not None:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
        if protocol is not None:
            self.log.info(
                "DHCPv6 server stopped: {counters}",
                counters=", ".join(f"{k} {v}" for k, v in sorted(protocol.counters.items())),
            )


class ServerService(MultiService):
    """
    The whole server.  Unlike L{MultiService}, it stops its children one
    at a time, in reverse order, each after the previous one has finished:
    the lease database is closed only once the DHCPv6 service has sent the
    replies of every commit in flight.  If a child fails to start, those
    already started are stopped again and the error is raised.

    @ivar exitOnStartupError: turn a L{StartupError} into a logged message
        and C{SystemExit(1)} instead of a traceback (set by the twistd
        plugin; an embedding application gets the exception).
    @ivar controlTarget: what the operator control channel talks to (set
        by L{makeService}, whether or not a control socket is configured):
        failover relationships register with its C{addRelationship}.
    """

    log = Logger()
    exitOnStartupError = False
    controlTarget: ControlTarget | None = None

    def startService(self) -> None:
        Service.startService(self)
        started: list[Service] = []
        for child in self:
            try:
                child.startService()
            except BaseException as e:
                Service.stopService(self)
                for done in reversed(started):
                    maybeDeferred(done.stopService).addErrback(
                        lambda f: self.log.failure("Stopping a service failed", f)
                    )
                if isinstance(e, StartupError) and self.exitOnStartupError:
                    self.log.critical("dhcp6ha cannot start: {error}", error=str(e))
                    raise SystemExit(1) from None
                raise
            started.append(child)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stopChildren())

    async def _stopChildren(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                self.log.failure("Stopping {service} failed", service=child.name)


def makeService(
    config: ServerConfig, reactor: Any = None, *, logExchanges: bool = False
) -> ServerService:
    """
    Build the server described by C{config}.

    @param reactor: the reactor to run on; the global one if C{None}.  It
        must manage file descriptors (any POSIX reactor) and threads.
    @param logExchanges: log every client exchange at debug level.
    @return: a L{MultiService} with the children C{"leases"} and
        C{"dhcpv6"}, and C{"control"} when C{[server] control-socket} is
        set; nothing is opened or bound until it is started.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    server = config.server

    def openStore() -> ILeaseStore:
        return SQLiteLeaseStore(server.database, reactor, commit_delay=server.commit_delay)

    top = ServerService()
    leases = LeaseStoreService(openStore, server.database)
    leases.setName("leases")
    leases.setServiceParent(top)
    dhcpv6 = DHCPv6Service(config, reactor, leases, logExchanges=logExchanges)
    dhcpv6.setName("dhcpv6")
    dhcpv6.setServiceParent(top)
    top.controlTarget = ControlTarget(config, reactor, leases, dhcpv6)
    if server.control_socket is not None:
        control = ControlService(server.control_socket, top.controlTarget, reactor)
        control.setName("control")
        control.setServiceParent(top)
    return top
