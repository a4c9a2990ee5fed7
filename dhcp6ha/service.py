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
     on stop, flushes every committed change and closes it.  With failover,
     the store is given the replication classifier
     (L{replicationClassifier}): each binding a client exchange changes is
     marked pending for the relationship whose pools cover it, in the same
     transaction.
  2. C{"failover"} (L{FailoverService}), only when the configuration has
     C{[failover:NAME]} sections: one
     L{dhcp6ha.failover.relationship.FailoverRelationship} per section,
     named C{NAME}, started in file order.  Each builds its endpoint, update
     queue and allocation policy on the open store, then connects to its
     secondary (primary) or listens for its primary (secondary).  On stop
     each goes to PAUSED (stored, then announced), sends Disconnect and
     closes its connection; unacked updates stay in the store.
  3. C{"dhcpv6"} (L{DHCPv6Service}): loads or creates the server DUID, builds
     the engine with an allocation policy (with failover, each
     relationship's subnets get its policy: L{failoverPolicies}), binds the
     UDP port, joins C{ff02::1:2} on the configured interfaces and runs
     expiry reclamation.  On stop it stops reclamation, stops reading
     datagrams, waits for the commits in flight (and sends their replies),
     then closes the port.
  4. C{"control"} (L{ControlService}), only when C{[server] control-socket}
     is set: the operator control socket of C{dhcp6ha-ctl} (mode 0600).  Its
     L{ControlTarget}, C{ServerService.controlTarget} (made even with no
     control socket), knows every relationship (C{addRelationship}).

So a stopping server stops taking client traffic first, then leaves its
failover relationships cleanly, and only then flushes and closes the
database.

Each relationship tells its partner this server's DUID at Connect (the
DHCPv6 service's, read then: the DHCPv6 service has started by the time a
connection is made) and the number of client messages received in CONTACT.
A failover member that has no configured or stored DUID makes a DUID-UUID,
not a DUID-LLT: the two members of a pair on one machine, started in the
same second, would otherwise get the same one.
Every failover state change is logged by the endpoint's state machine
(C{"Failover NAME: OLD -> NEW"}).

The relationships' TLS certificates, keys and CAs are read and checked by
L{makeService} itself (L{loadTLSMaterial}): a file that cannot be used is a
L{StartupError} before anything is opened or bound.  Nothing else is opened
or bound before C{startService}: under C{twistd} that is after daemonizing,
so the store's writer thread survives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, cast
from uuid import uuid4

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from dhcp6ha._typedtwisted import (
    multiServiceInit,
    serviceStart,
    serviceStop,
    setName,
    setServiceParent,
)
from dhcp6ha.allocation import StandalonePolicy, SubnetPolicies
from dhcp6ha.config import FailoverConfig, ServerConfig
from dhcp6ha.control import ControlService, ControlTarget
from dhcp6ha.engine import Engine
from dhcp6ha.failover.relationship import FailoverRelationship
from dhcp6ha.failover.tls import TLSMaterial, TLSMaterialError
from dhcp6ha.interfaces import IAllocationPolicy, ILeaseStore
from dhcp6ha.leases.lease import Lease
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
    "FailoverService",
    "LeaseStoreService",
    "ServerService",
    "StartupError",
    "failoverPolicies",
    "findLinkLayerAddress",
    "loadServerDuid",
    "loadTLSMaterial",
    "makeService",
    "replicationClassifier",
]

SERVER_DUID_KEY = "server-duid"
"""The store metadata key holding the generated server DUID (colon hex)."""

RECLAIM_LIMIT = 1000
"""Most bindings reclaimed in one transaction."""

# Typed views of the untyped Twisted port API used here (mypy --strict);
# those of the service API are in dhcp6ha._typedtwisted.


def _stopListening(port: DHCPv6Port) -> Deferred[None] | None:
    return cast(Callable[[], "Deferred[None] | None"], port.stopListening)()


def _portNumber(port: DHCPv6Port) -> int:
    host: Any = cast(Callable[[], object], port.getHost)()
    return int(host.port)


Policies: TypeAlias = "IAllocationPolicy | SubnetPolicies"
PolicyFactory = Callable[[ServerConfig, ILeaseStore], Policies]
EngineFactory = Callable[[ServerConfig, ILeaseStore, Policies, bytes], ServerEngine]
Listen = Callable[[Any, int, DHCPv6ServerProtocol, str], DHCPv6Port]
StoreFactory = Callable[[], ILeaseStore]
Replicate: TypeAlias = Callable[[Lease], "str | None"]
OpenStore: TypeAlias = Callable[["Replicate | None"], ILeaseStore]


class StartupError(Exception):
    """The server cannot start; the message says why, for an operator."""


def standalonePolicy(config: ServerConfig, store: ILeaseStore) -> Policies:
    """The policy of a server with no failover partner."""
    return StandalonePolicy()


def failoverPolicies(relationships: Sequence[FailoverRelationship]) -> PolicyFactory:
    """
    A policy factory for L{DHCPv6Service}: the subnets of each relationship
    get its L{FailoverRelationship.policy}, the others a L{StandalonePolicy}
    (RFC 7031 section 7 requirement 3, m-to-1).

    The factory must be called after the relationships have started (their
    policies exist only then); it raises L{StartupError} otherwise.
    """

    def policies(config: ServerConfig, store: ILeaseStore) -> Policies:
        byRelationship: dict[str, IAllocationPolicy] = {}
        for relationship in relationships:
            if relationship.policy is None:
                raise StartupError(
                    "failover " + relationship.config.name + ": the relationship is not running"
                )
            byRelationship[relationship.config.name] = relationship.policy
        return SubnetPolicies.ofRelationships(config, StandalonePolicy(), byRelationship)

    return policies


def replicationClassifier(relationships: Sequence[FailoverRelationship]) -> Replicate | None:
    """
    The lease store's replication classifier: the name of the relationship
    whose pools, prefix pools or reservations hold a binding
    (L{FailoverRelationship.covers}; a pool belongs to at most one
    relationship), else C{None}.  C{None} itself when there is no
    relationship (nothing is ever marked pending).

    The partner accepts an update only for a binding its own relationship
    covers, so this is the same test on both sides.
    """
    if not relationships:
        return None
    ordered = tuple(relationships)

    def replicate(lease: Lease) -> str | None:
        for relationship in ordered:
            if relationship.covers(lease):
                return relationship.config.name
        return None

    return replicate


def loadTLSMaterial(config: ServerConfig) -> dict[str, TLSMaterial]:
    """
    Read and check the certificate, key and CA of every C{[failover:NAME]}
    section.

    @return: the material by relationship name.
    @raise StartupError: a file cannot be used; the message names the
        configuration file, the section, the TLS file and what is wrong.
    """
    return {failover.name: _loadMaterial(config, failover) for failover in config.failover}


def _loadMaterial(config: ServerConfig, failover: FailoverConfig) -> TLSMaterial:
    try:
        return TLSMaterial.load(failover.certificate, failover.key, failover.ca)
    except TLSMaterialError as e:
        raise StartupError(
            f"{config.path}: [failover:{failover.name}]: cannot use {e.path}: {e.reason}"
        ) from e


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
        serviceStart(self)

    def stopService(self) -> Deferred[None]:
        serviceStop(self)
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
        @param policyFactory: makes the allocation policy, or a policy per
            subnet (L{failoverPolicies}), when the service starts.
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
        self._receivedBefore = 0

    def clientsSeen(self) -> int:
        """
        The number of client datagrams received since this service was
        made (over restarts): what failover CONTACT messages carry.
        """
        protocol = self.protocol
        current = 0 if protocol is None else protocol.counters["received"]
        return self._receivedBefore + current

    def startService(self) -> None:
        store = self.leases.store
        if store is None:
            raise StartupError("the lease database is not open")
        server = self.config.server
        duid, storing = loadServerDuid(
            self.config, store, self.reactor.seconds(), self._linkLayerAddress
        )
        policies = self._policyFactory(self.config, store)
        engine = self._engineFactory(self.config, store, policies, duid)
        # The engine names each change's own policy; this one is told of
        # changes no policy is named for.
        policy = SubnetPolicies.of(policies).default
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
                _stopListening(port)
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
        serviceStart(self)
        self.log.info(
            "DHCPv6 server {duid} listening on [{address}]:{port}{groups}",
            duid=describeDuid(duid),
            address=str(server.address),
            port=_portNumber(port),
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
        serviceStop(self)
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
            stopped = _stopListening(port)
            if stopped is not None:
                await stopped
        if protocol is not None:
            self._receivedBefore += protocol.counters["received"]
            self.log.info(
                "DHCPv6 server stopped: {counters}",
                counters=", ".join(f"{k} {v}" for k, v in sorted(protocol.counters.items())),
            )


class SequentialService(MultiService):
    """
    A L{MultiService} that starts its children in order and stops them one
    at a time, in reverse order, each after the previous one has finished
    stopping.  If a child fails to start, those already started are stopped
    again (in reverse order, one at a time) and the error is raised.
    """

    log = Logger()

    def startService(self) -> None:
        serviceStart(self)
        started: list[Service] = []
        for child in self:
            try:
                child.startService()
            except BaseException:
                serviceStop(self)
                Deferred.fromCoroutine(self._stopSequentially(started))
                raise
            started.append(child)

    def stopService(self) -> Deferred[None]:
        serviceStop(self)
        return Deferred.fromCoroutine(self._stopSequentially(list(self)))

    async def _stopSequentially(self, children: list[Service]) -> None:
        for child in reversed(children):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                self.log.failure("Stopping {service} failed", service=child.name)


class FailoverService(SequentialService):
    """
    The C{"failover"} child of L{makeService}: the failover relationships,
    one child each, named after its relationship, in configuration order.

    @ivar relationships: the relationships, by name.
    """

    def __init__(self) -> None:
        multiServiceInit(self)
        self.relationships: dict[str, FailoverRelationship] = {}

    def addRelationship(self, relationship: FailoverRelationship) -> None:
        """Add C{relationship} as a child (its service name is its own name)."""
        setServiceParent(relationship, self)
        self.relationships[relationship.config.name] = relationship


class ServerService(SequentialService):
    """
    The whole server.  Unlike L{MultiService}, it stops its children one
    at a time, in reverse order, each after the previous one has finished
    (L{SequentialService}): the lease database is closed only once the
    DHCPv6 service has sent the replies of every commit in flight and the
    failover relationships have left their partners.

    @ivar exitOnStartupError: turn a L{StartupError} into a logged message
        and C{SystemExit(1)} instead of a traceback (set by the twistd
        plugin; an embedding application gets the exception).
    @ivar controlTarget: what the operator control channel talks to (set
        by L{makeService}, whether or not a control socket is configured):
        every failover relationship is registered with it.
    @ivar relationships: the failover relationships, by name (empty
        without failover).
    @ivar onStarted: called once every child has started (set by the
        twistd plugin: L{dhcp6ha.tap.tuneGarbageCollector}), or C{None}.
    """

    exitOnStartupError = False
    controlTarget: ControlTarget | None = None
    onStarted: Callable[[], None] | None = None

    def __init__(self) -> None:
        multiServiceInit(self)
        self.relationships: Mapping[str, FailoverRelationship] = {}

    def startService(self) -> None:
        try:
            super().startService()
        except StartupError as e:
            if self.exitOnStartupError:
                self.log.critical("dhcp6ha cannot start: {error}", error=str(e))
                raise SystemExit(1) from None
            raise
        if self.onStarted is not None:
            self.onStarted()


def makeService(
    config: ServerConfig,
    reactor: Any = None,
    *,
    logExchanges: bool = False,
    tlsMaterial: Mapping[str, TLSMaterial] | None = None,
    openStore: OpenStore | None = None,
    listen: Listen = listenDHCPv6,
) -> ServerService:
    """
    Build the server described by C{config}.

    @param reactor: the reactor to run on; the global one if C{None}.  It
        must manage file descriptors (any POSIX reactor) and threads, and
        provide TCP and TLS for failover.
    @param logExchanges: log every client exchange at debug level.
    @param tlsMaterial: the relationships' TLS material by name, already
        loaded (L{loadTLSMaterial}, as the twistd options do); read from
        the configured files when C{None}.
    @param openStore: opens the lease store, given the replication
        classifier (default: L{SQLiteLeaseStore} on C{[server] database}).
    @param listen: binds the DHCPv6 port (L{DHCPv6Service}).
    @return: a L{ServerService} with the children C{"leases"},
        C{"failover"} when there are C{[failover:NAME]} sections,
        C{"dhcpv6"}, and C{"control"} when C{[server] control-socket} is set;
        nothing is opened or bound until it is started.
    @raise StartupError: a relationship's certificate, key or CA cannot be
        used, or its partner identity does not parse.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    server = config.server
    materials = dict(tlsMaterial) if tlsMaterial is not None else loadTLSMaterial(config)

    # The relationships read the open store, and the DHCPv6 service's DUID
    # and client count, only once running: both services are made below.
    def openedStore() -> ILeaseStore:
        store = leases.store
        if store is None:
            raise StartupError("the lease database is not open")
        return store

    def serverDuid() -> bytes | None:
        return dhcpv6.serverDuid

    def clientsSeen() -> int:
        return dhcpv6.clientsSeen()

    relationships: list[FailoverRelationship] = []
    for failover in config.failover:
        material = materials.get(failover.name)
        if material is None:
            material = _loadMaterial(config, failover)
        try:
            relationship = FailoverRelationship(
                failover,
                reactor,
                openedStore,
                serverConfig=config,
                serverDuid=serverDuid,
                clientsSeen=clientsSeen,
                material=material,
            )
        except ValueError as e:
            raise StartupError(f"{config.path}: [failover:{failover.name}]: {e}") from e
        relationships.append(relationship)
    classifier = replicationClassifier(relationships)

    def openSQLite(replicate: Replicate | None) -> ILeaseStore:
        return SQLiteLeaseStore(
            server.database, reactor, commit_delay=server.commit_delay, replicate=replicate
        )

    opener: OpenStore = openSQLite if openStore is None else openStore

    top = ServerService()
    leases = LeaseStoreService(lambda: opener(classifier), server.database)
    setName(leases, "leases")
    setServiceParent(leases, top)
    if relationships:
        failoverService = FailoverService()
        setName(failoverService, "failover")
        for relationship in relationships:
            failoverService.addRelationship(relationship)
        setServiceParent(failoverService, top)
        top.relationships = failoverService.relationships
        policyFactory = failoverPolicies(relationships)
    else:
        policyFactory = standalonePolicy
    dhcpv6 = DHCPv6Service(
        config,
        reactor,
        leases,
        policyFactory=policyFactory,
        listen=listen,
        # Partners must have different DUIDs (a Server Identifier says which
        # one a client talks to); two DUID-LLTs made on one machine in the
        # same second are equal, so a failover member makes a DUID-UUID.
        linkLayerAddress=(lambda: None) if relationships else None,
        logExchanges=logExchanges,
    )
    setName(dhcpv6, "dhcpv6")
    setServiceParent(dhcpv6, top)
    top.controlTarget = ControlTarget(config, reactor, leases, dhcpv6, relationships)
    if server.control_socket is not None:
        control = ControlService(server.control_socket, top.controlTarget, reactor)
        setName(control, "control")
        setServiceParent(control, top)
    return top
