# -*- test-case-name: tests.test_protocol -*-
"""
The failover protocol on one partner connection (RFC 8156 sections 5 and 6,
carried over AMP inside mutual TLS): the AMP responders, and the
L{IFailoverPeer} through which the endpoint state machine
(L{dhcp6ha.failover.machine.FailoverEndpoint}) talks to the partner.

Two objects:

  - L{PartnerSession}: what one relationship's connections share (the
    endpoint, the update queue, the store, the local parameters, the
    measurements: last contact, clock skew, the partner's DUID) and which
    connection is the live one.  At most one connection is live: a newer
    one that completes Connect replaces the older one, which is closed
    (a primary that restarted reconnects before the secondary has noticed
    that the old TCP connection is dead).
  - L{PartnerProtocol}: one authenticated connection.  The primary
    (C{initiator=True}) sends L{Connect} as soon as L{PartnerProtocol.startConnect}
    is called; the secondary waits for it.  Only once the Connect exchange
    succeeded does either side hand the connection to the endpoint
    (C{endpoint.connected(protocol, partnerKeepalive)}) and attach the update
    queue.

Connect (section 6.1.2) is refused, with a precise reason logged on both
sides, when the protocol versions have no version in common (the version
used is the lower of the two highest), the relationship name or roles do
not match, the MCLTs differ, or the clocks differ by more than
C{maxClockSkew} (section 7.1); the primary checks the answer the same way
and disconnects if it is not acceptable.

A partner is authenticated, not trusted: every box is checked before it is
acted on.  An unknown command, a command before Connect completed, an
answer to no question, arguments that do not parse, values out of range (a
binding with prefix length 200, a 60 KiB DUID), keys longer than AMP allows
or boxes with too many keys, are a protocol violation: the reason is logged,
a L{Disconnect} carrying it is sent, and the connection is closed (aborted
after L{CLOSE_GRACE} seconds if the peer does not let it close).  Nothing a
partner sends raises out of the protocol.

Sends cut short by the loss of the connection fire with C{None}: the loss
itself reaches the endpoint as C{communicationsLost()}, and the endpoint
does not need a second report of it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Sequence
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, cast

from attrs import evolve, frozen
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from dhcp6ha.config import DEFAULT_MAX_BACKUP_PREFIXES, PrefixPool
from dhcp6ha.failover.balance import isTakeback
from dhcp6ha.failover.commands import (
    PROTOCOL_VERSION,
    BindingUpdate,
    Connect,
    ConnectRefused,
    Contact,
    Disconnect,
    FailoverStatus,
    NotInState,
    PoolRequest,
    State,
    UpdateDone,
    UpdateRequest,
    UpdateRequestAll,
)
from dhcp6ha.failover.machine import EndpointState, FailoverEndpoint, Role, StateMessage
from dhcp6ha.failover.tls import AuthenticatedPartnerAddress, describeAddress
from dhcp6ha.interfaces import IFailoverPeer, IUpdateQueue
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

if TYPE_CHECKING:
    from dhcp6ha.interfaces import ILeaseStore

__all__ = [
    "CLOSE_GRACE",
    "MIN_PROTOCOL_VERSION",
    "LocalParameters",
    "PartnerFactory",
    "PartnerProtocol",
    "PartnerSession",
    "PrefixShare",
    "ProtocolViolation",
    "ReceiveBindings",
    "SendBatch",
    "checkBinding",
]

#: The oldest protocol version this implementation still speaks.
MIN_PROTOCOL_VERSION = 1

#: Seconds a closing connection may take to flush before it is aborted.
CLOSE_GRACE = 5.0

#: RFC 8415 section 11.1: a DUID is at most 128 octets plus its type code.
MAX_DUID_LENGTH = 130
#: A relationship name, a role (characters).
MAX_NAME_LENGTH = 255
#: An FQDN on a binding (characters, RFC 1035 wire limit).
MAX_FQDN_LENGTH = 255
#: A Disconnect reason (characters).
MAX_REASON_LENGTH = 1024
#: Keys in one box: the largest command has 10 arguments plus AMP's own keys.
MAX_KEYS_PER_BOX = 32
#: Largest 32-bit unsigned value (IAIDs, lifetimes).
_UINT32 = 0xFFFFFFFF
#: How many PoolRequest rounds the secondary makes in a row, at most.
MAX_POOL_ROUNDS = 64

# Typed views of the untyped AMP API used here (mypy --strict).
_ampInit = cast(Callable[[amp.AMP], None], amp.AMP.__init__)
_callRemote = cast(Callable[..., "Deferred[dict[str, Any]]"], amp.AMP.callRemote)
_stringReceived = cast(Callable[[amp.AMP, bytes], None], amp.AMP.stringReceived)
_protoKey = cast(Callable[[amp.AMP, bytes], str], amp.AMP.proto_key)
_dispatchBox = cast(Callable[[amp.AMP, amp.AmpBox], None], amp.AMP.ampBoxReceived)
_sendBox = cast(Callable[[amp.AMP, amp.AmpBox], None], amp.AMP.sendBox)
_ampConnectionMade = cast(Callable[[amp.AMP], None], amp.AMP.connectionMade)
_ampConnectionLost = cast(Callable[[amp.AMP, Failure], None], amp.AMP.connectionLost)
_newBox = cast(Callable[..., amp.AmpBox], amp.AmpBox)


def _parseArguments(command: type[amp.Command], box: amp.AmpBox, proto: amp.AMP) -> dict[str, Any]:
    parse = cast(Callable[[amp.AmpBox, amp.AMP], dict[str, Any]], command.parseArguments)
    return parse(box, proto)


def _makeResponse(
    command: type[amp.Command], response: dict[str, Any], proto: amp.AMP
) -> amp.AmpBox:
    make = cast(Callable[[dict[str, Any], amp.AMP], dict[bytes, bytes]], command.makeResponse)
    return _newBox(make(response, proto))


def _errorsOf(command: type[amp.Command]) -> dict[type[Exception], bytes]:
    """Every error C{command} declares, fatal ones included."""
    return {**command.errors, **command.fatalErrors}


def _knownError(failure: Failure, command: type[amp.Command]) -> type[Exception] | None:
    for error in _errorsOf(command):
        if isinstance(failure.value, error):
            return error
    return None


SendBatch = Callable[[list[dict[str, Any]]], "Deferred[list[dict[str, Any]]]"]
"""Sends one batch of binding boxes; fires with the partner's per-binding results."""

ReceiveBindings = Callable[
    ["ILeaseStore", Role, list[dict[str, Any]], float], "Deferred[list[dict[str, Any]]]"
]
"""
Applies a received batch (conflict resolution, commit); fires with one result
per binding once the accepted changes are durable (C{queue.receiveBindings}).
"""


class ProtocolViolation(Exception):
    """The partner sent something this protocol does not allow; the reason says what."""


@frozen
class LocalParameters:
    """
    This server's side of the Connect exchange for one relationship.

    @ivar relationship: the relationship name (must match the partner's).
    @ivar role: this server's role.
    @ivar mclt: maximum client lead time, seconds (must match).
    @ivar maxUnacked: the most binding updates we accept unacked (sent to
        the partner as OPTION_F_UNACKED_BNDUPD).
    @ivar keepalive: our FO_KEEPALIVE_TIME: the partner must send something
        within it (section 6.5).
    @ivar maxClockSkew: the largest clock difference accepted (section 7.1).
    @ivar version: the highest protocol version we speak.
    @ivar minVersion: the lowest.
    @ivar coverage: a digest of the pools and reservations the relationship
        covers (must match when both sides send one), or C{None}.
    @ivar coverageSummary: those pools and reservations in words, for the
        log of a mismatch.
    """

    relationship: str
    role: Role
    mclt: int
    maxUnacked: int
    keepalive: float
    maxClockSkew: float
    version: int = PROTOCOL_VERSION
    minVersion: int = MIN_PROTOCOL_VERSION
    coverage: bytes | None = None
    coverageSummary: str = ""


# --- proportional allocation: the secondary's share of free prefixes ----------------


class PrefixShare:
    """
    The primary's half of proportional allocation (RFC 8156 section 4.2.2,
    DESIGN.md "Who may allocate what"): every prefix with no record, FREE or
    PENDING-FREE belongs to the primary; FREE-BACKUP ones are the
    secondary's reserve, which the primary keeps at

        C{min(floor(free * share), maxBackup)} per delegable prefix pool,

    where C{free} counts the pool's available prefixes (no record, FREE,
    PENDING-FREE, FREE-BACKUP; reserved prefixes excluded) and C{maxBackup}
    is C{[failover:NAME] max-backup-prefixes}: a working reserve, not the
    share of the whole space in records (a /40 delegating /56s with share
    0.5 would otherwise be 32,768 records and binding updates at the first
    connection).

    Pools are not materialised, and nothing is read beyond what the reserve
    needs.  The reserve is taken from the top of each pool downwards; the
    I{reach} of a pool is how deep (in prefixes from the top) FREE-BACKUP
    records may lie.  It is kept in the store's metadata (C{metadataKey}),
    written before the records that extend it, so that a restarted primary
    still counts the whole reserve.  One pass (L{hand}), per pool:

      1. reads the reach, counting its FREE-BACKUP and available prefixes;
      2. reads from the top again, turning free prefixes (no record, FREE,
         PENDING-FREE) into FREE-BACKUP records while the reserve is below
         C{min(floor(available * share), maxBackup)}, and goes on below the
         reach while the reserve is below C{maxBackup}, counting the
         available prefixes it meets (so the bound grows as it reads).  The
         reserve ends at the formula above; the pool is read to its end only
         when it is small or nearly exhausted.

    Prefixes held or cooling down (ACTIVE, EXPIRED, RELEASED, RESET,
    ABANDONED) and reserved prefixes are skipped.  A pass creates at most
    C{limit} records (the secondary asks again while the answer is not 0),
    reads at most C{chunk} prefixes per reactor turn, and commits each
    turn's records in that same turn, so that no allocation can slip in
    between a read and its commit.

    Replenishing: the secondary asks (PoolRequest) when it enters NORMAL,
    after a period in which it may have used its reserve; in NORMAL, the
    primary learns from the secondary's binding updates that a FREE-BACKUP
    prefix was leased (L{backupEnded}) and tops the reserve up itself once
    a pool's reserve has fallen below half its target (L{wantsTopUp};
    section 4.2.2: "The primary server can, at any time, send an available
    delegable prefix to the secondary").

    Taking FREE-BACKUP prefixes back from the secondary, when a reserve is
    above its target (the pool filled up, the configuration lowered the
    share or the cap, the primary runs low), is
    L{dhcp6ha.failover.balance.PrefixTakeback}'s: the same target, so the
    two never pull against each other.  A pass counts a pending takeback
    (L{dhcp6ha.failover.balance.isTakeback}) as FREE-BACKUP: still the
    secondary's, never handed again before the secondary acks its FREE.

    @ivar held: per pool, the FREE-BACKUP prefixes the secondary holds, as
        of the last pass less the ends reported since (absent: no pass yet).
    @ivar targets: per pool, the reserve the last pass aimed at.
    """

    log = Logger()

    def __init__(
        self,
        pools: Sequence[PrefixPool],
        share: float,
        clock: IReactorTime,
        *,
        reserved: Collection[IPv6Network] = (),
        maxBackup: int = DEFAULT_MAX_BACKUP_PREFIXES,
        metadataKey: str | None = None,
        limit: int = 4096,
        chunk: int = 1024,
    ) -> None:
        """
        @param pools: the relationship's delegable prefix pools.
        @param share: the fraction of the available prefixes for the secondary.
        @param clock: time (start time of state) and reactor turns.
        @param reserved: prefixes reserved for clients: never handed.
        @param maxBackup: the most FREE-BACKUP prefixes per pool.
        @param metadataKey: where the pools' reach is kept in the store's
            metadata (one key per pool, below this one); C{None}: in memory.
        @param limit: the most records one pass creates.
        @param chunk: the most prefixes read per reactor turn.
        """
        if not 0.0 <= share <= 1.0:
            raise ValueError("share must be between 0 and 1")
        if limit < 1 or chunk < 1 or maxBackup < 1:
            raise ValueError("limit, chunk and maxBackup must be positive")
        self.pools = tuple(pools)
        self.share = share
        self.maxBackup = maxBackup
        self.limit = limit
        self.chunk = chunk
        self._clock = clock
        self._reserved = frozenset(reserved)
        self._metadataKey = metadataKey
        self._reach: dict[PrefixPool, int] = {}
        self._seen: dict[PrefixPool, int] = {}
        self.held: dict[PrefixPool, int] = {}
        self.targets: dict[PrefixPool, int] = {}

    def bound(self, available: int) -> int:
        """The reserve of a pool with C{available} available prefixes."""
        return min(self.maxBackup, math.floor(available * self.share))

    def reachKey(self, pool: PrefixPool) -> str | None:
        """The metadata key of C{pool}'s reach (C{None}: not kept)."""
        if self._metadataKey is None:
            return None
        return self._metadataKey + "." + str(pool.prefix) + "." + str(pool.delegated_length)

    def reach(self, store: ILeaseStore, pool: PrefixPool) -> int:
        """How deep from the top of C{pool} FREE-BACKUP records may lie."""
        reach = self._reach.get(pool)
        if reach is None:
            reach = 0
            key = self.reachKey(pool)
            text = None if key is None else store.getMetadata(key)
            if text:
                try:
                    reach = max(0, min(pool.size, int(text)))
                except ValueError:
                    self.log.warn(
                        "Unreadable FREE-BACKUP reach {text!r} of pool {pool}: taken as 0",
                        text=text,
                        pool=str(pool.prefix),
                    )
            self._reach[pool] = reach
        return max(reach, self._seen.get(pool, 0))

    # --- what the primary learns of the secondary's reserve ----------------------------

    def poolOf(self, address: IPv6Address, length: int) -> PrefixPool | None:
        """The pool whose delegable prefix C{address}/C{length} is, if any."""
        for pool in self.pools:
            if length == pool.delegated_length and address in pool.prefix:
                return pool
        return None

    @staticmethod
    def _depth(pool: PrefixPool, address: IPv6Address) -> int:
        """How deep from the top of C{pool} C{address} lies (1: the top prefix)."""
        shift = 128 - pool.delegated_length
        return pool.size - ((int(address) - int(pool.prefix.network_address)) >> shift)

    def backupSeen(self, address: IPv6Address, length: int) -> None:
        """
        A FREE-BACKUP record reached us from the partner (sent everything
        after we lost our database, say): passes count down to it.
        """
        pool = self.poolOf(address, length)
        if pool is not None:
            self._seen[pool] = max(self._seen.get(pool, 0), self._depth(pool, address))

    def backupEnded(self, address: IPv6Address, length: int) -> None:
        """A FREE-BACKUP prefix left the reserve (the secondary leased it)."""
        pool = self.poolOf(address, length)
        if pool is not None and pool in self.held:
            self.held[pool] = max(0, self.held[pool] - 1)

    def wantsTopUp(self) -> bool:
        """Has some pool's reserve fallen below half its target since the last pass?"""
        return any(self.held.get(pool, 0) * 2 < target for pool, target in self.targets.items())

    # --- one pass ------------------------------------------------------------------------

    def hand(self, store: ILeaseStore) -> Deferred[list[Lease]]:
        """
        Create (and commit) the FREE-BACKUP records one pass hands over.

        @return: fires with the new records once they are all durable.
        """
        return Deferred.fromCoroutine(self._hand(store))

    async def _hand(self, store: ILeaseStore) -> list[Lease]:
        work = _ShareWork(store, self._clock, self.chunk)
        created: list[Lease] = []
        if self.share > 0:
            for pool in self.pools:
                if len(created) >= self.limit:
                    break
                await self._handPool(store, pool, work, created)
        await work.finish()
        return created

    async def _handPool(
        self, store: ILeaseStore, pool: PrefixPool, work: _ShareWork, created: list[Lease]
    ) -> None:
        length = pool.delegated_length
        step = 1 << (128 - length)
        top = int(pool.prefix.network_address) + (pool.size - 1) * step
        reach = self.reach(store, pool)

        def at(depth: int) -> IPv6Address:
            return IPv6Address(top - (depth - 1) * step)

        have = available = 0
        for depth in range(1, reach + 1):
            await work.next()
            address = at(depth)
            if IPv6Network((address, length)) in self._reserved:
                continue
            kind = _kindOf(store.get(address, length))
            if kind is not None:
                available += 1
                have += kind
        deepest = reach
        depth = 0
        while depth < pool.size and len(created) < self.limit:
            if depth < reach and have >= self.bound(available):
                depth = reach  # nothing more to hand within the reach
            if depth >= reach and have >= self.maxBackup:
                break
            if depth >= pool.size:
                break
            await work.next()
            depth += 1
            address = at(depth)
            if IPv6Network((address, length)) in self._reserved:
                continue
            existing = store.get(address, length)
            kind = _kindOf(existing)
            if kind is None:
                continue
            if depth > reach:
                # Below the reach there is no FREE-BACKUP record but one
                # received from the partner since: count it all the same.
                available += 1
                have += kind
                if kind:
                    deepest = max(deepest, depth)
                    continue
            elif kind:
                continue
            if have >= self.bound(available):
                continue
            record = self._backup(address, length, existing)
            work.add(record)
            created.append(record)
            have += 1
            if depth > deepest:
                deepest = depth
                self._reach[pool] = deepest
                key = self.reachKey(pool)
                if key is not None:
                    # Written before this turn's records: never a record
                    # beyond the reach stored.
                    work.metadata[key] = str(deepest)
        self.held[pool] = have
        self.targets[pool] = self.bound(available)

    def _backup(self, address: IPv6Address, length: int, existing: Lease | None) -> Lease:
        now = self._clock.seconds()
        if existing is not None:
            return evolve(existing, state=BindingState.FREE_BACKUP, start_time_of_state=now)
        return Lease(
            lease_type=LeaseType.PD,
            address=address,
            prefix_length=length,
            state=BindingState.FREE_BACKUP,
            duid=b"",
            iaid=0,
            start_time_of_state=now,
            cltt=0.0,
            preferred_lifetime=0,
            valid_lifetime=0,
            expires=0.0,
        )


def _kindOf(existing: Lease | None) -> int | None:
    """
    For a pass: C{None} if the prefix is taken (held, cooling down,
    abandoned), C{1} if it is FREE-BACKUP (or a pending takeback), C{0} if
    it is free.
    """
    if existing is None:
        return 0
    if existing.state is BindingState.FREE_BACKUP or isTakeback(existing):
        return 1
    if existing.state in (BindingState.FREE, BindingState.PENDING_FREE):
        return 0
    return None


class _ShareWork:
    """
    The reads and writes of one L{PrefixShare} pass: at most C{chunk}
    reads per reactor turn, each turn's records (and the reach before them)
    written in that turn.
    """

    def __init__(self, store: ILeaseStore, clock: IReactorTime, chunk: int) -> None:
        self.store = store
        self.clock = clock
        self.chunk = chunk
        self.read = 0
        self.batch: list[Lease] = []
        self.metadata: dict[str, str] = {}
        self.writes: list[Deferred[None]] = []

    async def next(self) -> None:
        """Before a read: after C{chunk} reads, write this turn's work and yield."""
        if self.read >= self.chunk:
            self.flush()
            self.read = 0
            await deferLater(self.clock, 0, lambda: None)
        self.read += 1

    def add(self, record: Lease) -> None:
        self.batch.append(record)

    def flush(self) -> None:
        for key, value in self.metadata.items():
            self.writes.append(self.store.setMetadata(key, value))
        self.metadata.clear()
        if self.batch:
            self.writes.append(self.store.commit(self.batch))
            self.batch = []

    async def finish(self) -> None:
        """Write what is left; fires once every write of the pass is durable."""
        self.flush()
        for d in self.writes:
            await d


# --- what one relationship's connections share ----------------------------------------


class PartnerSession:
    """
    The partner side of one failover relationship: its endpoint, queue and
    store, and the one live connection to the partner.

    @ivar parameters: our Connect parameters.
    @ivar endpoint: the relationship's state machine.
    @ivar queue: its update queue.
    @ivar store: its lease store.
    @ivar current: the live (Connect completed) connection, or C{None}.
    @ivar accepting: whether new connections may complete Connect (false
        once the relationship is stopping).
    @ivar partnerDuid: the partner's server DUID, learnt at Connect.
    @ivar lastContact: when the last box from the partner arrived.
    @ivar clockSkew: the partner's clock minus ours, seconds, last measured
        (at Connect, then at every Contact).
    @ivar partnerClientsSeen: the client message count of the partner's last
        Contact (RFC 7031 section 4.7), if it sends one.
    @ivar violations: protocol violations seen (connections closed for them).
    @ivar refusals: Connect exchanges refused, by either side.
    """

    log = Logger()

    def __init__(
        self,
        parameters: LocalParameters,
        endpoint: FailoverEndpoint,
        queue: IUpdateQueue,
        store: ILeaseStore,
        clock: IReactorTime,
        receiveBindings: ReceiveBindings,
        *,
        serverDuid: Callable[[], bytes | None] = lambda: None,
        clientsSeen: Callable[[], int] | None = None,
        prefixShare: PrefixShare | None = None,
        partnerDuidLearnt: Callable[[bytes], None] | None = None,
        connectedHook: Callable[[PartnerProtocol], None] | None = None,
        prefixesHanded: Callable[[], None] | None = None,
    ) -> None:
        """
        @param receiveBindings: applies a received BindingUpdate batch.
        @param serverDuid: our server DUID, sent at Connect (read each time).
        @param clientsSeen: the number of client messages this server has
            received, sent in every Contact.
        @param prefixShare: answers PoolRequests (primary with delegable
            prefix pools); C{None}: answer that there is nothing to hand.
        @param partnerDuidLearnt: called with the partner's DUID whenever a
            Connect tells it.
        @param connectedHook: called with each connection that becomes the
            live one, after the endpoint has it and before the queue is
            attached (e.g. to bound the queue by the partner's max unacked).
        @param prefixesHanded: called after each pass of C{prefixShare}
            that succeeded, once its records are queued (e.g. to take back
            what is above the reserve's target).
        """
        self.parameters = parameters
        self.endpoint = endpoint
        self.queue = queue
        self.store = store
        self.clock = clock
        self.receiveBindings = receiveBindings
        self.serverDuid = serverDuid
        self.clientsSeen = clientsSeen
        self.prefixShare = prefixShare
        self._partnerDuidLearnt = partnerDuidLearnt
        self._connectedHook = connectedHook
        self._prefixesHanded = prefixesHanded
        self.current: PartnerProtocol | None = None
        self.accepting = True
        self.partnerDuid: bytes | None = None
        self.lastContact: float | None = None
        self.clockSkew: float | None = None
        self.partnerClientsSeen: int | None = None
        self.violations = 0
        self.refusals = 0
        self._skewWarned = False
        self._handing: list[Deferred[int]] = []

    @property
    def name(self) -> str:
        """The relationship name."""
        return self.parameters.relationship

    def activate(
        self,
        protocol: PartnerProtocol,
        partnerKeepalive: float,
        partnerDuid: bytes | None,
        skew: float,
    ) -> None:
        """
        C{protocol} completed Connect: make it the live connection (closing
        any older one), hand it to the endpoint, attach the queue.
        """
        if not self.accepting:
            protocol.close("this server is shutting down", FailoverStatus.SERVER_SHUTTING_DOWN)
            return
        old = self.current
        if old is not None and old is not protocol:
            self.log.warn(
                "Failover {relationship}: a new partner connection ({peer}) replaces the"
                " live one ({old})",
                relationship=self.name,
                peer=protocol.peer,
                old=old.peer,
            )
            # Closing first: what the old connection had in flight fails
            # quietly (it is closing) when the queue is detached.
            self.current = None
            old.close("replaced by a newer connection")
            self.queue.detach()
        self.current = protocol
        self.lastContact = self.clock.seconds()
        self.noteSkew(skew)
        if partnerDuid:
            self.partnerDuid = partnerDuid
            if self._partnerDuidLearnt is not None:
                self._partnerDuidLearnt(partnerDuid)
        # STATE is the first message after Connect (section 6.1): the
        # endpoint sends it from connected(), before the queue may send.
        self.endpoint.connected(protocol, partnerKeepalive)
        if self.current is protocol and self._connectedHook is not None:
            self._connectedHook(protocol)
        if self.current is protocol:
            self.queue.attach(protocol.sendBindings)

    def release(self, protocol: PartnerProtocol) -> bool:
        """
        C{protocol} stops being the live connection (if it was), without
        telling the endpoint.

        @return: whether it was the live one.
        """
        if self.current is not protocol:
            return False
        self.current = None
        self.queue.detach()
        return True

    def lost(self, protocol: PartnerProtocol) -> None:
        """C{protocol}'s connection is gone; if it was the live one, communications failed."""
        if self.release(protocol):
            self.endpoint.communicationsLost()

    def received(self, protocol: PartnerProtocol) -> None:
        """A box arrived on the live connection C{protocol} (section 6.6)."""
        if self.current is protocol:
            self.lastContact = self.clock.seconds()
            self.endpoint.messageReceived()

    def noteSkew(self, skew: float) -> None:
        """Record a measured skew; warn once when it goes beyond the bound (7.1)."""
        self.clockSkew = skew
        bound = self.parameters.maxClockSkew
        if abs(skew) > bound and not self._skewWarned:
            self._skewWarned = True
            self.log.warn(
                "Failover {relationship}: the partner's clock is {skew} s off ours, beyond the"
                " {bound} s bound; binding times may be misjudged",
                relationship=self.name,
                skew=round(skew, 3),
                bound=bound,
            )
        elif abs(skew) <= bound:
            self._skewWarned = False

    def handPrefixes(self) -> Deferred[int]:
        """
        Answer a PoolRequest: hand the secondary its share of free prefixes
        (one pass at a time; a request during a pass gets that pass's result).

        @return: fires with the number of FREE-BACKUP bindings queued.
        """
        share = self.prefixShare
        if share is None:
            return succeed(0)
        waiter: Deferred[int] = Deferred()
        self._handing.append(waiter)
        if len(self._handing) == 1:
            share.hand(self.store).addCallback(self._queueHanded).addBoth(self._handed)
        return waiter

    def _queueHanded(self, records: list[Lease]) -> int:
        for record in records:
            self.queue.enqueue(record)
        if records:
            self.log.info(
                "Failover {relationship}: {count} delegable prefixes handed to the secondary"
                " (FREE-BACKUP)",
                relationship=self.name,
                count=len(records),
            )
        return len(records)

    def _handed(self, result: int | Failure) -> None:
        waiters, self._handing = self._handing, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        if self._prefixesHanded is not None and not isinstance(result, Failure):
            try:
                self._prefixesHanded()
            except Exception:
                self.log.failure(
                    "Failover {relationship}: after handing prefixes", relationship=self.name
                )

    def closeAll(self, reason: str, status: FailoverStatus) -> Deferred[None]:
        """
        Stop accepting connections and close the live one (sending
        Disconnect with C{reason}).

        @return: fires once it is closed.
        """
        self.accepting = False
        protocol = self.current
        if protocol is None:
            return succeed(None)
        protocol.close(reason, status)
        return protocol.whenClosed()


# --- one connection ---------------------------------------------------------------------


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def checkBinding(box: dict[str, Any]) -> str | None:
    """
    What is wrong with one received binding box (already parsed by
    L{BindingUpdate}'s AmpList), or C{None} if nothing is.

    The binding is described in text only when something is wrong (a
    resync checks a million good ones).
    """
    leaseType = box["lease_type"]
    length = box["prefix_length"]
    address: IPv6Address = box["address"]
    if leaseType is LeaseType.PD:
        if not 1 <= length <= 128:
            return "prefix length " + str(length) + " out of range"
        if int(address) & ((1 << (128 - length)) - 1):
            return _where(address, length) + " has host bits set"
    elif length != 128:
        return "an address binding (" + str(address) + ") with prefix length " + str(length)
    if len(box["duid"]) > MAX_DUID_LENGTH:
        return _where(address, length) + ": a DUID of " + str(len(box["duid"])) + " bytes"
    if not 0 <= box["iaid"] <= _UINT32:
        return _where(address, length) + ": IAID out of range"
    for key in ("preferred_lifetime", "valid_lifetime"):
        if not 0 <= box[key] <= _UINT32:
            return _where(address, length) + ": " + key + " out of range"
    for key in ("start_time_of_state", "cltt", "expires", "partner_lifetime"):
        # False for NaN, infinities and negative times.
        if not 0 <= box[key] < math.inf:
            return _where(address, length) + ": " + key + " is not a time"
    fqdn = box.get("fqdn")
    if fqdn is not None and len(fqdn) > MAX_FQDN_LENGTH:
        return _where(address, length) + ": an FQDN of " + str(len(fqdn)) + " characters"
    flags = box.get("fqdn_flags")
    if flags is not None and not 0 <= flags <= 0xFF:
        return _where(address, length) + ": FQDN flags out of range"
    return None


def _where(address: IPv6Address, length: int) -> str:
    return str(address) + "/" + str(length)


@frozen
class _Then:
    """A responder's result, plus what to do once the answer is sent."""

    response: dict[str, Any]
    after: Callable[[], None]


def _describe(error: BaseException | None) -> str:
    text = str(error)
    return type(error).__name__ + (": " + text if text else "")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


#: Command name -> (schema, responder method name).
_RESPONDERS: dict[bytes, tuple[type[amp.Command], str]] = {
    Connect.commandName: (Connect, "_connectReceived"),
    State.commandName: (State, "_stateReceived"),
    Contact.commandName: (Contact, "_contactReceived"),
    Disconnect.commandName: (Disconnect, "_disconnectReceived"),
    BindingUpdate.commandName: (BindingUpdate, "_bindingUpdateReceived"),
    PoolRequest.commandName: (PoolRequest, "_poolRequestReceived"),
    UpdateRequest.commandName: (UpdateRequest, "_updateRequestReceived"),
    UpdateRequestAll.commandName: (UpdateRequestAll, "_updateRequestAllReceived"),
    UpdateDone.commandName: (UpdateDone, "_updateDoneReceived"),
}


@implementer(IFailoverPeer)
class PartnerProtocol(amp.AMP):
    """
    One authenticated connection to the failover partner.

    @ivar session: the relationship's L{PartnerSession}.
    @ivar initiator: C{True} on the primary (it sends Connect).
    @ivar peer: the partner's address, for logs.
    @ivar phase: C{"new"}, C{"connecting"} (Connect sent or awaited),
        C{"established"}, C{"closed"}.
    @ivar closing: why we are closing this connection, once we are.
    @ivar version: the protocol version negotiated at Connect.
    @ivar partnerMaxUnacked: the partner's OPTION_F_UNACKED_BNDUPD.
    @ivar boxesReceived: boxes received on this connection.
    """

    log = Logger()

    def __init__(self, session: PartnerSession, *, initiator: bool, peer: str = "partner") -> None:
        _ampInit(self)
        self.session = session
        self.initiator = initiator
        self.peer = peer
        self.phase = "new"
        self.closing: str | None = None
        self.version: int | None = None
        self.partnerMaxUnacked: int | None = None
        self.boxesReceived = 0
        self._keys = 0
        self._graceTimer: IDelayedCall | None = None
        self._closed: list[Deferred[None]] = []
        self._lostHooks: list[Callable[[Failure], None]] = []
        self._requestIds = itertools.count(1)
        self._operatorRequests: set[int] = set()
        self._pendingEstablish: tuple[float, bytes | None, float] | None = None

    # --- helpers -------------------------------------------------------------------

    @property
    def _relationship(self) -> str:
        return self.session.name

    @property
    def established(self) -> bool:
        """Is the Connect exchange done and the connection not closing?"""
        return self.phase == "established" and self.closing is None

    def onLost(self, hook: Callable[[Failure], None]) -> None:
        """Call C{hook} with the reason when this connection is lost."""
        self._lostHooks.append(hook)

    def whenClosed(self) -> Deferred[None]:
        """Fires once the connection is lost."""
        if self.phase == "closed":
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        return d

    def _call(self, command: type[amp.Command], **kwargs: Any) -> Deferred[dict[str, Any]]:
        """C{callRemote}, failing (not raising) on a closed connection; answers checked."""
        if self.phase == "closed" or self.closing is not None:
            return fail(ConnectionClosed("the partner connection is closed"))
        d: Deferred[dict[str, Any]] = maybeDeferred(_callRemote, self, command, **kwargs)

        def answerFailed(failure: Failure) -> Failure:
            expected = (ConnectionClosed, amp.RemoteAmpError, *_errorsOf(command))
            if self.phase != "closed" and not isinstance(failure.value, expected):
                self.violation(
                    "malformed answer to "
                    + command.commandName.decode("ascii")
                    + ": "
                    + _describe(failure.value)
                )
            return failure

        return d.addErrback(answerFailed)

    def _quiet(self, d: Deferred[Any], what: str) -> Deferred[None]:
        """The IFailoverPeer result: None, also when the connection went away meanwhile."""

        def done(result: object) -> None:
            return None

        def failed(failure: Failure) -> Failure | None:
            if self.phase == "closed" or self.closing is not None:
                self.log.debug(
                    "Failover {relationship}: {what} cut short: connection closed",
                    relationship=self._relationship,
                    what=what,
                )
                return None
            return failure

        return d.addCallbacks(done, failed)

    # --- closing -------------------------------------------------------------------

    def close(self, reason: str, status: FailoverStatus = FailoverStatus.UNSPEC_FAIL) -> None:
        """
        Close this connection: send Disconnect with C{reason}, then close;
        abort if still open after L{CLOSE_GRACE} seconds.  Boxes that arrive
        meanwhile are ignored.
        """
        if self.closing is not None or self.phase == "closed":
            return
        self.closing = reason
        self.paused = True  # stop parsing what is already buffered
        self.session.lost(self)
        try:
            _callRemote(
                self, Disconnect, status=int(status), reason=_clip(reason, MAX_REASON_LENGTH)
            )
        except Exception:
            pass  # the transport is already gone
        self._loseConnection()

    def _loseConnection(self) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.loseConnection()
        if self._graceTimer is None:
            self._graceTimer = self.session.clock.callLater(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        self._graceTimer = None
        transport = self.transport
        if transport is not None and self.phase != "closed":
            self.log.warn(
                "Failover {relationship}: connection with {peer} did not close in {grace} s;"
                " aborting it",
                relationship=self._relationship,
                peer=self.peer,
                grace=CLOSE_GRACE,
            )
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()

    def violation(self, reason: str) -> None:
        """The partner broke the protocol: log why and close the connection."""
        if self.closing is not None or self.phase == "closed":
            return
        self.session.violations += 1
        self.log.error(
            "Failover {relationship}: protocol violation by the partner {peer}: {reason};"
            " closing the connection",
            relationship=self._relationship,
            peer=self.peer,
            reason=_clip(reason, 500),
            failoverEvent="violation",
        )
        self.close("protocol violation: " + reason)

    # --- framing: limits AMP itself does not impose --------------------------------

    def stringReceived(self, string: bytes) -> None:
        if self.closing is not None or self.phase == "closed":
            return
        _stringReceived(self, string)

    def proto_key(self, string: bytes) -> str:
        if string:
            self._keys += 1
            if self._keys > MAX_KEYS_PER_BOX:
                self.violation("a box with more than " + str(MAX_KEYS_PER_BOX) + " keys")
                return "key"
        else:
            self._keys = 0
        return _protoKey(self, string)

    def lengthLimitExceeded(self, length: int) -> None:
        self.violation(
            "a key of " + str(length) + " bytes (at most " + str(self._MAX_KEY_LENGTH) + ")"
        )

    # --- incoming boxes ------------------------------------------------------------

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        if self.closing is not None or self.phase == "closed":
            return
        self.boxesReceived += 1
        try:
            self._boxReceived(box)
        except ProtocolViolation as e:
            self.violation(str(e))
        except Exception:
            self.log.failure(
                "Failover {relationship}: handling a box from {peer} failed",
                relationship=self._relationship,
                peer=self.peer,
            )
            self.close("internal error")

    def _boxReceived(self, box: amp.AmpBox) -> None:
        if amp.ANSWER in box or amp.ERROR in box:
            tag = box.get(amp.ANSWER, box.get(amp.ERROR))
            if not self._outstandingRequests or tag not in self._outstandingRequests:
                raise ProtocolViolation("an answer to no request (tag " + repr(tag)[:40] + ")")
            if amp.ERROR in box and (amp.ERROR_CODE not in box or amp.ERROR_DESCRIPTION not in box):
                raise ProtocolViolation("an error answer without code or description")
            self.session.received(self)
            _dispatchBox(self, box)
            return
        if amp.COMMAND not in box:
            raise ProtocolViolation("a box that is neither a command nor an answer")
        name: bytes = box[amp.COMMAND]
        entry = _RESPONDERS.get(name)
        if entry is None:
            raise ProtocolViolation("unknown command " + repr(name)[:80])
        command, method = entry
        text = name.decode("ascii")
        if command is Connect:
            if self.initiator:
                raise ProtocolViolation("Connect sent to the primary")
            if self.phase != "connecting":
                raise ProtocolViolation("a second Connect")
        elif self.phase != "established":
            raise ProtocolViolation(text + " before Connect completed")
        try:
            arguments = _parseArguments(command, box, self)
        except Exception as e:
            raise ProtocolViolation("malformed " + text + ": " + _describe(e)) from None
        self.session.received(self)
        d: Deferred[object] = maybeDeferred(getattr(self, method), **arguments)
        if amp.ASK in box:
            tag = box[amp.ASK]
            d.addCallback(self._answer, command, tag)
            d.addErrback(self._error, command, tag)
        else:
            d.addErrback(self._failed, command)

    def _answer(self, result: object, command: type[amp.Command], tag: bytes) -> None:
        after: Callable[[], None] | None = None
        response: Any = result
        if isinstance(result, _Then):
            response = result.response
            after = result.after
        if self.phase == "closed" or self.closing is not None:
            return
        box = _makeResponse(command, response, self)
        box[amp.ANSWER] = tag
        _sendBox(self, box)
        if after is not None:
            after()

    def _error(self, failure: Failure, command: type[amp.Command], tag: bytes) -> None:
        if self.phase == "closed" or (self.closing is not None):
            return
        if isinstance(failure.value, ProtocolViolation):
            self.violation(str(failure.value))
            return
        known = _knownError(failure, command)
        if known is None:
            self._failed(failure, command)
            return
        box = _newBox()
        box[amp.ERROR] = tag
        box[amp.ERROR_CODE] = _errorsOf(command)[known]
        box[amp.ERROR_DESCRIPTION] = str(failure.value).encode("utf-8", "replace")
        _sendBox(self, box)
        if known in command.fatalErrors:
            self.closing = str(failure.value)
            self.paused = True
            self._loseConnection()

    def _failed(self, failure: Failure, command: type[amp.Command]) -> None:
        if self.phase == "closed":
            return
        if isinstance(failure.value, ProtocolViolation):
            self.violation(str(failure.value))
            return
        self.log.failure(
            "Failover {relationship}: {command} from {peer} failed",
            failure,
            relationship=self._relationship,
            command=command.commandName.decode("ascii"),
            peer=self.peer,
        )
        self.close("internal error handling " + command.commandName.decode("ascii"))

    # --- connection ----------------------------------------------------------------

    def connectionMade(self) -> None:
        _ampConnectionMade(self)
        if not self.initiator:
            self.phase = "connecting"

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._graceTimer is not None and self._graceTimer.active():
            self._graceTimer.cancel()
        self._graceTimer = None
        self.phase = "closed"
        # The queue is detached before AMP fails what is in flight, so that
        # it counts those batches as lost with the connection, not failed.
        self.session.lost(self)
        _ampConnectionLost(self, reason)
        hooks, self._lostHooks = self._lostHooks, []
        for hook in hooks:
            hook(reason)
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)

    # --- Connect (section 6.1) -------------------------------------------------------

    def startConnect(self) -> Deferred[PartnerProtocol]:
        """
        The primary's side of the Connect exchange.

        @return: fires with this protocol once the partner accepted and its
            answer is acceptable (the endpoint then has the connection);
            fails with L{ConnectRefused} (the connection is then closed) or
            with the connection's loss.
        """
        if not self.initiator or self.phase != "new":
            return fail(ValueError("startConnect: not a new primary connection"))
        parameters = self.session.parameters
        self.phase = "connecting"
        sent = self.session.clock.seconds()
        d = self._call(
            Connect,
            protocol_version=parameters.version,
            relationship=parameters.relationship,
            role=parameters.role.value,
            mclt=parameters.mclt,
            sender_time=sent,
            max_unacked=parameters.maxUnacked,
            keepalive=parameters.keepalive,
            server_duid=self.session.serverDuid(),
            coverage=parameters.coverage,
        )
        return d.addCallbacks(self._connectAnswered, self._connectFailed, callbackArgs=(sent,))

    def _connectAnswered(self, answer: dict[str, Any], sent: float) -> PartnerProtocol:
        now = self.session.clock.seconds()
        parameters = self.session.parameters
        # The answer was stamped about halfway between our send and receipt.
        skew = answer["sender_time"] - (sent + now) / 2
        problem = self._checkAnswer(answer, skew)
        if problem is not None:
            reason, status = problem
            self.session.refusals += 1
            self.log.error(
                "Failover {relationship}: the partner {peer} accepted Connect, but {reason};"
                " disconnecting",
                relationship=self._relationship,
                peer=self.peer,
                reason=reason,
                failoverEvent="connectRefused",
            )
            self.close(reason, status)
            raise ConnectRefused(reason)
        if self.phase != "connecting":
            raise ConnectRefused("connection closed during Connect")
        keepalive = answer.get("keepalive")
        self._establish(
            parameters.keepalive if keepalive is None else keepalive,
            answer.get("server_duid"),
            skew,
            answer["protocol_version"],
            answer["max_unacked"],
        )
        return self

    def _checkAnswer(
        self, answer: dict[str, Any], skew: float
    ) -> tuple[str, FailoverStatus] | None:
        """Section 6.1.3: what makes the CONNECTREPLY unacceptable, if anything."""
        parameters = self.session.parameters
        version = answer["protocol_version"]
        if not parameters.minVersion <= version <= parameters.version:
            return (
                "it answered protocol version "
                + str(version)
                + "; this server speaks versions "
                + str(parameters.minVersion)
                + " to "
                + str(parameters.version),
                FailoverStatus.UNSPEC_FAIL,
            )
        role = answer["role"]
        if role == parameters.role.value or role not in (r.value for r in Role):
            return (
                "it says its role is "
                + repr(_clip(role, 40))
                + "; this server is the "
                + parameters.role.value,
                FailoverStatus.CONFIGURATION_CONFLICT,
            )
        mclt = answer.get("mclt")
        if mclt is not None and mclt != parameters.mclt:
            return (
                "its MCLT is " + str(mclt) + " s and ours " + str(parameters.mclt) + " s",
                FailoverStatus.CONFIGURATION_CONFLICT,
            )
        mismatch = self._coverageMismatch(answer.get("coverage"))
        if mismatch is not None:
            return mismatch, FailoverStatus.CONFIGURATION_CONFLICT
        return self._checkCommon(
            answer["sender_time"],
            skew,
            answer.get("keepalive"),
            answer["max_unacked"],
            answer.get("server_duid"),
        )

    def _checkCommon(
        self,
        senderTime: float,
        skew: float,
        keepalive: float | None,
        maxUnacked: int,
        duid: bytes | None,
    ) -> tuple[str, FailoverStatus] | None:
        """The checks both Connect and its answer get."""
        bound = self.session.parameters.maxClockSkew
        if not _finite(senderTime):
            return "its time is not a number", FailoverStatus.UNSPEC_FAIL
        if abs(skew) > bound:
            return (
                "its clock is "
                + format(skew, ".3f")
                + " s off ours, beyond the "
                + format(bound, "g")
                + " s bound (RFC 8156 section 7.1)",
                FailoverStatus.EXCESSIVE_TIME_SKEW,
            )
        if keepalive is not None and (not _finite(keepalive) or keepalive <= 0):
            return "its keepalive time " + repr(keepalive) + " is not positive", (
                FailoverStatus.UNSPEC_FAIL
            )
        if maxUnacked < 1:
            return "its maximum of unacked updates is " + str(maxUnacked), (
                FailoverStatus.UNSPEC_FAIL
            )
        if duid is not None and not 0 < len(duid) <= MAX_DUID_LENGTH:
            return "its server DUID is " + str(len(duid)) + " bytes long", (
                FailoverStatus.UNSPEC_FAIL
            )
        return None

    def _coverageMismatch(self, coverage: bytes | None) -> str | None:
        """
        Why the partner's coverage digest is unacceptable: both servers of a
        relationship must split the same pools and honour the same
        reservations, or each hands out addresses the other also does.  A
        partner that sends none (an older version) is not checked.
        """
        ours = self.session.parameters.coverage
        if coverage is None or ours is None or coverage == ours:
            return None
        return (
            "the two servers cover different pools or reservations (digest "
            + coverage.hex()[:16]
            + " there, "
            + ours.hex()[:16]
            + " here: "
            + self.session.parameters.coverageSummary
            + "); give both the same subnets' pools and reservations"
        )

    def _connectFailed(self, failure: Failure) -> Failure:
        if isinstance(failure.value, ConnectRefused):
            self.session.refusals += 1
            self.log.error(
                "Failover {relationship}: the partner {peer} refused Connect: {reason}",
                relationship=self._relationship,
                peer=self.peer,
                reason=str(failure.value),
                failoverEvent="connectRefused",
            )
            if self.closing is None:
                self.closing = "Connect refused"
                self._loseConnection()
        return failure

    def _connectReceived(
        self,
        protocol_version: int,
        relationship: str,
        role: str,
        mclt: int,
        sender_time: float,
        max_unacked: int,
        keepalive: float,
        server_duid: bytes | None = None,
        coverage: bytes | None = None,
    ) -> _Then:
        """Section 6.1.2: the secondary decides whether to accept the primary."""
        parameters = self.session.parameters
        now = self.session.clock.seconds()
        skew = sender_time - now if _finite(sender_time) else math.nan
        reason: str | None = None
        if not self.session.accepting:
            reason = "this server is shutting down"
        elif protocol_version < 1 or min(protocol_version, parameters.version) < (
            parameters.minVersion
        ):
            reason = (
                "protocol version "
                + str(protocol_version)
                + " is not supported (this server speaks versions "
                + str(parameters.minVersion)
                + " to "
                + str(parameters.version)
                + ")"
            )
        elif relationship != parameters.relationship:
            reason = (
                "relationship "
                + repr(_clip(relationship, MAX_NAME_LENGTH))
                + " is not served here (this listener serves "
                + repr(parameters.relationship)
                + ")"
            )
        elif role not in (r.value for r in Role):
            reason = "unknown role " + repr(_clip(role, 40))
        elif role == parameters.role.value:
            reason = (
                "both servers are " + role + ": one must be the primary and the other the secondary"
            )
        elif mclt != parameters.mclt:
            reason = (
                "MCLT mismatch: the primary has "
                + str(mclt)
                + " s, this server "
                + str(parameters.mclt)
                + " s"
            )
        else:
            reason = self._coverageMismatch(coverage)
            if reason is None:
                problem = self._checkCommon(sender_time, skew, keepalive, max_unacked, server_duid)
                if problem is not None:
                    reason = problem[0]
        if reason is not None:
            self.session.refusals += 1
            self.log.error(
                "Failover {relationship}: refused Connect from {peer}: {reason}",
                relationship=self._relationship,
                peer=self.peer,
                reason=reason,
                failoverEvent="connectRefused",
            )
            raise ConnectRefused(reason)
        version = min(protocol_version, parameters.version)
        self.version = version
        self.partnerMaxUnacked = max_unacked
        response = {
            "protocol_version": version,
            "role": parameters.role.value,
            "sender_time": self.session.clock.seconds(),
            "max_unacked": parameters.maxUnacked,
            "mclt": parameters.mclt,
            "keepalive": parameters.keepalive,
            "server_duid": self.session.serverDuid(),
            "coverage": parameters.coverage,
        }
        # Section 6.1.2: the STATE follows the CONNECTREPLY.
        return _Then(
            response, lambda: self._establish(keepalive, server_duid, skew, version, max_unacked)
        )

    def _establish(
        self,
        partnerKeepalive: float,
        partnerDuid: bytes | None,
        skew: float,
        version: int,
        maxUnacked: int,
    ) -> None:
        if self.phase != "connecting" or self.closing is not None:
            return
        self.phase = "established"
        self.version = version
        self.partnerMaxUnacked = maxUnacked
        self.log.info(
            "Failover {relationship}: connected to the partner {peer} (protocol version"
            " {version}, clock skew {skew} s)",
            relationship=self._relationship,
            peer=self.peer,
            version=version,
            skew=round(skew, 3),
            failoverEvent="connected",
        )
        self.session.activate(self, partnerKeepalive, partnerDuid, skew)

    # --- responders ------------------------------------------------------------------

    def _stateReceived(
        self,
        state: str,
        start_time_of_state: float,
        partner_down_time: float | None = None,
        has_database: bool | None = None,
        startup: bool | None = None,
    ) -> dict[str, Any]:
        try:
            endpointState = EndpointState(state)
        except ValueError:
            raise ProtocolViolation("unknown state " + repr(_clip(state, 40))) from None
        if endpointState is EndpointState.INIT:
            raise ProtocolViolation("state 'init' is not an RFC 8156 state")
        if not _finite(start_time_of_state) or (
            partner_down_time is not None and not _finite(partner_down_time)
        ):
            raise ProtocolViolation("State with a time that is not a number")
        self.session.endpoint.stateReceived(
            endpointState,
            start_time_of_state,
            startup=bool(startup),
            hasState=True if has_database is None else has_database,
            partnerDownTime=partner_down_time,
        )
        return {}

    def _contactReceived(
        self, sender_time: float, clients_seen: int | None = None
    ) -> dict[str, Any]:
        if not _finite(sender_time):
            raise ProtocolViolation("Contact with a time that is not a number")
        if clients_seen is not None and clients_seen < 0:
            raise ProtocolViolation("Contact with a negative client count")
        self.session.noteSkew(sender_time - self.session.clock.seconds())
        if clients_seen is not None and self.session.current is self:
            self.session.partnerClientsSeen = clients_seen
            # RFC 7031 section 4.7: is the partner still reaching its clients?
            self.session.endpoint.clientsSeenReceived(clients_seen)
        return {}

    def _disconnectReceived(self, status: int, reason: str) -> None:
        if len(reason) > MAX_REASON_LENGTH:
            raise ProtocolViolation("a Disconnect reason of " + str(len(reason)) + " characters")
        self.log.warn(
            "Failover {relationship}: the partner {peer} disconnects: {reason} (status {status})",
            relationship=self._relationship,
            peer=self.peer,
            reason=reason,
            status=status,
            failoverEvent="partnerDisconnect",
        )
        if self.closing is None:
            self.closing = "the partner disconnected"
            self.paused = True
            self.session.lost(self)
            self._loseConnection()

    def _bindingUpdateReceived(self, bindings: list[dict[str, Any]]) -> Deferred[dict[str, Any]]:
        for box in bindings:
            problem = checkBinding(box)
            if problem is not None:
                raise ProtocolViolation("BindingUpdate: " + problem)
        session = self.session
        d = session.receiveBindings(
            session.store, session.parameters.role, bindings, session.clock.seconds()
        )

        def answer(results: list[dict[str, Any]]) -> dict[str, Any]:
            return {"results": results}

        return d.addCallback(answer)

    def _poolRequestReceived(self) -> Deferred[dict[str, Any]] | dict[str, Any]:
        session = self.session
        if session.parameters.role is not Role.PRIMARY:
            raise NotInState("only the primary hands out prefixes")
        state = session.endpoint.state
        if state is not EndpointState.NORMAL:
            raise NotInState("the primary is in " + state.value + ", not normal")

        def answer(count: int) -> dict[str, Any]:
            return {"pending": count}

        return session.handPrefixes().addCallback(answer)

    def _updateRequestReceived(self, request_id: int | None = None) -> _Then:
        return _Then({}, lambda: self._serveUpdates(self.session.queue.flush, request_id))

    def _updateRequestAllReceived(self, request_id: int | None = None) -> _Then:
        return _Then({}, lambda: self._serveUpdates(self.session.queue.sendAll, request_id))

    def _serveUpdates(self, send: Callable[[], Deferred[None]], requestId: int | None) -> None:
        """UPDREQ / UPDREQALL: send the updates, then UPDDONE (section 5.3.7)."""

        def done(_: object) -> Deferred[dict[str, Any]] | None:
            if not self.established:
                return None
            return self._call(UpdateDone, request_id=requestId)

        def failed(failure: Failure) -> None:
            if self.phase == "closed" or self.closing is not None:
                return
            self.log.failure(
                "Failover {relationship}: answering the partner's update request failed",
                failure,
                relationship=self._relationship,
            )

        maybeDeferred(send).addCallback(done).addErrback(failed)

    def _updateDoneReceived(self, request_id: int | None = None) -> dict[str, Any]:
        if request_id is not None and request_id in self._operatorRequests:
            self._operatorRequests.discard(request_id)
            self.log.info(
                "Failover {relationship}: the partner has sent every update asked for"
                " (operator sync)",
                relationship=self._relationship,
            )
            return {}
        self.session.endpoint.updateDoneReceived()
        return {}

    # --- IFailoverPeer -----------------------------------------------------------------

    def sendState(self, message: StateMessage) -> Deferred[None]:
        return self._quiet(
            self._call(
                State,
                state=message.state.value,
                start_time_of_state=message.start_time,
                partner_down_time=message.partner_down_time,
                has_database=message.has_state,
                startup=message.startup,
            ),
            "State",
        )

    def sendUpdateRequest(self) -> Deferred[None]:
        return self._quiet(
            self._call(UpdateRequest, request_id=next(self._requestIds)), "UpdateRequest"
        )

    def sendUpdateRequestAll(self) -> Deferred[None]:
        return self._quiet(
            self._call(UpdateRequestAll, request_id=next(self._requestIds)), "UpdateRequestAll"
        )

    def requestUpdatesForOperator(self) -> Deferred[None]:
        """
        UPDREQ on the operator's behalf: its UPDDONE is not reported to the
        endpoint (which did not ask).
        """
        requestId = next(self._requestIds)
        self._operatorRequests.add(requestId)
        return self._quiet(self._call(UpdateRequest, request_id=requestId), "UpdateRequest")

    def sendUnackedUpdates(self) -> Deferred[None]:
        if not self.established:
            return succeed(None)
        return self._quiet(maybeDeferred(self.session.queue.flush), "unacked updates")

    def sendPoolRequest(self) -> Deferred[None]:
        return self._quiet(Deferred.fromCoroutine(self._poolRequests()), "PoolRequest")

    async def _poolRequests(self) -> None:
        for _ in range(MAX_POOL_ROUNDS):
            try:
                answer = await self._call(PoolRequest)
            except NotInState as e:
                self.log.info(
                    "Failover {relationship}: the primary hands no prefixes now: {reason}",
                    relationship=self._relationship,
                    reason=str(e),
                )
                return
            pending: int = answer["pending"]
            if pending <= 0:
                return
            self.log.info(
                "Failover {relationship}: the primary is handing over {count} prefixes",
                relationship=self._relationship,
                count=pending,
            )

    def sendContact(self) -> Deferred[None]:
        clientsSeen = self.session.clientsSeen
        return self._quiet(
            self._call(
                Contact,
                sender_time=self.session.clock.seconds(),
                clients_seen=None if clientsSeen is None else clientsSeen(),
            ),
            "Contact",
        )

    def disconnect(self, reason: str) -> None:
        self.close(reason)

    # --- the queue's sender ----------------------------------------------------------

    def sendBindings(self, boxes: list[dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
        """
        Send one BindingUpdate batch (the queue's C{sendBatch}); fires with
        the partner's results, one per binding, in order.
        """

        def results(answer: dict[str, Any]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = answer["results"]
            if len(found) != len(boxes):
                reason = (
                    "BindingUpdate answered with "
                    + str(len(found))
                    + " results for "
                    + str(len(boxes))
                    + " bindings"
                )
                self.violation(reason)
                raise ProtocolViolation(reason)
            return found

        return self._call(BindingUpdate, bindings=boxes).addCallback(results)


class PartnerFactory(Factory):
    """
    Builds a L{PartnerProtocol} per authenticated connection of one
    relationship (given an L{AuthenticatedPartnerAddress} by the TLS layer).
    """

    def __init__(self, session: PartnerSession, *, initiator: bool) -> None:
        self.session = session
        self.initiator = initiator

    def buildProtocol(self, addr: IAddress | None) -> PartnerProtocol:
        if isinstance(addr, AuthenticatedPartnerAddress):
            peer = describeAddress(addr.address) + " (" + addr.identity.name + ")"
        else:
            peer = describeAddress(addr)
        protocol = PartnerProtocol(self.session, initiator=self.initiator, peer=peer)
        protocol.factory = self
        return protocol
