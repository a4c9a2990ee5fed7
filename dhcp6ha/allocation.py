# -*- test-case-name: tests.test_allocation -*-
"""
Address and prefix allocation: which lease a client gets, never enumerating a pool.

A client's first candidate in a pool is derived from a stable hash of its
(DUID, IAID); on collision the allocator probes the deterministic sequence
C{(start + i * step) mod size}, where C{step} is coprime to the pool size so
that the sequence visits every slot of the pool before repeating.  At most
L{MAX_PROBES} candidates are tried per pool, so a /64 range costs no more
than a 16-address one, and a pool no larger than L{MAX_PROBES} can be filled
to the last address.

Choices made here (documented, on purpose):

  - Reservations by DUID win over everything else, and a reserved address
    or prefix is never given to another client.
  - A client's existing binding (found with L{ILeaseStore.byClient}, never by
    scanning) comes next, then the client's hint, then the hash probe.
  - The subnet-router anycast address (the all-zero interface identifier of
    the subnet prefix, RFC 4291 section 2.6.1) is never handed out from a
    pool, even when a pool contains it.
  - A candidate is free when it has no binding, or its binding is FREE,
    FREE-BACKUP, EXPIRED or RELEASED, and the policy's C{mayAllocate} agrees;
    the IA's own ACTIVE binding is its own without asking the policy.  An
    ACTIVE binding whose lifetime has run out but that
    L{dhcp6ha.engine.Engine.reclaim} has not yet moved to EXPIRED is still
    taken: reclamation, not allocation, changes binding states.
  - The policy is chosen per subnet (L{SubnetPolicies}): one server may be
    in several failover relationships, each covering some subnets, and
    serve other subnets alone (RFC 7031 section 7, requirement 3).
  - Own pool first (draft-ietf-dhc-dhcpv6-failover-protocol section 8.4.1):
    when the subnet's policy provides L{IFailoverPolicy}, a hint or probed
    candidate that the policy allows but that is not in this server's own
    pool (L{IFailoverPolicy.isOwn}: in PARTNER-DOWN, the partner's free
    prefixes) is taken only when no own candidate is found in any of the
    subnet's pools.  A client's reservation and its own binding come first
    as always.  A candidate is checked once: the probe does not grow.
  - Renewals (C{probe=False}, the engine's Renew and Rebind): the lease the
    client lists (the hint; for a prefix, exactly the listed prefix and
    length) comes right after the client's reservations, before its other
    bindings, so that a client keeps the lease it holds when this server's
    records of it are older (a lost binding update: the partner renewed or
    moved the IA).  When the subnet's policy provides L{IRenewalPolicy}, it
    is asked C{mayRenew} for that listed lease instead of C{mayAllocate}
    (failover: a lease the partner granted, which this server may renew but
    never allocate).
"""

from __future__ import annotations

import enum
from collections.abc import Container, Iterator, Mapping
from hashlib import blake2b
from ipaddress import IPv6Address
from math import gcd
from typing import TypeVar

from attrs import frozen
from zope.interface import implementer

from dhcp6ha.config import AddressPool, PrefixPool, ServerConfig, SubnetConfig
from dhcp6ha.interfaces import IAllocationPolicy, IFailoverPolicy, ILeaseStore, IRenewalPolicy
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType

__all__ = ["MAX_PROBES", "Allocator", "StandalonePolicy", "SubnetPolicies"]

#: The most candidates tried in one pool for one request.  A pool of at most
#: this many slots is probed completely (it can fill up); a larger one is
#: considered exhausted after this many collisions, which with a hash-spread
#: start only happens when it is very nearly full.  256 keeps the worst case
#: of one exchange to a few hundred store reads.
MAX_PROBES = 256

#: Binding states another client's lease may be taken over from (subject to
#: the policy: in failover, only once the partner has acknowledged the state).
_REUSABLE = frozenset(
    {BindingState.FREE, BindingState.FREE_BACKUP, BindingState.EXPIRED, BindingState.RELEASED}
)

#: States of a client's own binding that it may get back.
_OWN_REUSABLE = frozenset({BindingState.ACTIVE, BindingState.EXPIRED, BindingState.RELEASED})

_NO_EXCLUDE: frozenset[tuple[IPv6Address, int]] = frozenset()

_T = TypeVar("_T")

_UNSPECIFIED = IPv6Address(0)


@implementer(IAllocationPolicy)
class StandalonePolicy:
    """
    The policy of a server with no failover partner: everything is allowed,
    lifetimes are not capped, and every client message is answered, except
    that a Request, Renew, Release or Decline naming another server is not
    ours (RFC 8415 section 16).
    """

    _NEEDS_OUR_ID = frozenset({3, 5, 8, 9})  # REQUEST, RENEW, RELEASE, DECLINE

    def mayAllocate(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        return True

    def maxValidLifetime(self, existing: Lease | None, desired: int, now: float) -> int:
        return desired

    def respondsTo(self, msg_type: int, addressed_to_us: bool) -> bool:
        if msg_type in self._NEEDS_OUR_ID:
            return addressed_to_us
        return True

    def bindingChanged(self, lease: Lease) -> None:
        pass


class SubnetPolicies:
    """
    Which allocation policy decides for each subnet.

    A server may be in several failover relationships, each covering some
    subnets, and serve the remaining subnets alone (RFC 7031 section 7,
    requirement 3, "m-to-1"): each relationship has its own policy, and
    every other subnet gets C{default}.

    This is not an L{IAllocationPolicy} itself (C{respondsTo} and
    C{maxValidLifetime} have no subnet to choose by): the engine selects the
    subnet of an exchange first, then asks L{policyFor}.

    @ivar default: the policy of subnets not in C{bySubnet} (the
        standalone policy, typically), and of messages with no subnet.
    @ivar bySubnet: policies by subnet name (C{NAME} of C{[subnet:NAME]}).
    """

    def __init__(
        self,
        default: IAllocationPolicy,
        bySubnet: Mapping[str, IAllocationPolicy] | None = None,
    ) -> None:
        self.default = default
        self.bySubnet: dict[str, IAllocationPolicy] = dict(bySubnet or {})

    @classmethod
    def ofRelationships(
        cls,
        config: ServerConfig,
        default: IAllocationPolicy,
        byRelationship: Mapping[str, IAllocationPolicy],
    ) -> SubnetPolicies:
        """
        The subnets of each C{[failover:NAME]} of C{config} get that
        relationship's policy; the others get C{default}.

        @param byRelationship: a policy for every relationship, by name.
        @raise ValueError: if a relationship of C{config} has no policy, or a
            policy is given for a relationship C{config} does not have.
        """
        names = {relationship.name for relationship in config.failover}
        missing = sorted(names - set(byRelationship))
        unknown = sorted(set(byRelationship) - names)
        if missing or unknown:
            raise ValueError(
                f"failover policies: missing for {missing}, unknown relationships {unknown}"
            )
        bySubnet: dict[str, IAllocationPolicy] = {}
        for relationship in config.failover:
            for name in relationship.subnets:
                bySubnet[name] = byRelationship[relationship.name]
        return cls(default, bySubnet)

    @classmethod
    def of(cls, policy: IAllocationPolicy | SubnetPolicies) -> SubnetPolicies:
        """C{policy} itself, or one policy for every subnet."""
        if isinstance(policy, SubnetPolicies):
            return policy
        return cls(policy)

    def policyFor(self, subnet: SubnetConfig | None) -> IAllocationPolicy:
        """The policy deciding for C{subnet} (C{None}: no subnet, the default)."""
        if subnet is None or not self.bySubnet:
            return self.default
        return self.bySubnet.get(subnet.name, self.default)

    def __repr__(self) -> str:
        return f"<SubnetPolicies default={self.default!r} bySubnet={self.bySubnet!r}>"


class _Avail(enum.Enum):
    """Whether one candidate may be given, and from whose pool."""

    NO = "no"
    OWN = "own"  # this server's own pool, or no failover
    PARTNER = "partner"  # allowed, but the failover partner's pool


def stableHash(duid: bytes, iaid: int, salt: bytes) -> int:
    """
    A hash of a client's IA that is the same in every process and on every
    machine (unlike L{hash}).

    @param salt: separates address and prefix candidates of one IA.
    @return: a 128-bit integer.
    """
    digest = blake2b(salt + b"\0" + iaid.to_bytes(4, "big") + duid, digest_size=16).digest()
    return int.from_bytes(digest, "big")


def probeSequence(h: int, size: int, limit: int = MAX_PROBES) -> Iterator[int]:
    """
    The slot indices to try, in order, for hash C{h} in a pool of C{size}.

    The step is coprime to C{size}, so the first C{min(size, limit)} indices
    are all distinct.
    """
    if size <= 0:
        return
    start = h % size
    if size <= 2:
        step = 1
    else:
        step = (h >> 64) % (size - 1) + 1
        while gcd(step, size) != 1:
            step += 1
    index = start
    for _ in range(min(size, limit)):
        yield index
        index = (index + step) % size


@frozen
class _SubnetIndex:
    """Per-subnet lookups built once: who each reserved lease belongs to."""

    subnet: SubnetConfig
    address_owner: dict[IPv6Address, bytes]
    prefix_owner: dict[tuple[IPv6Address, int], bytes]
    addresses_of: dict[bytes, tuple[IPv6Address, ...]]
    prefixes_of: dict[bytes, tuple[tuple[IPv6Address, int], ...]]
    anycast: IPv6Address | None

    @classmethod
    def build(cls, subnet: SubnetConfig) -> _SubnetIndex:
        address_owner: dict[IPv6Address, bytes] = {}
        prefix_owner: dict[tuple[IPv6Address, int], bytes] = {}
        addresses_of: dict[bytes, tuple[IPv6Address, ...]] = {}
        prefixes_of: dict[bytes, tuple[tuple[IPv6Address, int], ...]] = {}
        for reservation in subnet.reservations:
            for address in reservation.addresses:
                address_owner[address] = reservation.duid
            prefixes = tuple((p.network_address, p.prefixlen) for p in reservation.prefixes)
            for key in prefixes:
                prefix_owner[key] = reservation.duid
            addresses_of[reservation.duid] = (
                addresses_of.get(reservation.duid, ()) + reservation.addresses
            )
            prefixes_of[reservation.duid] = prefixes_of.get(reservation.duid, ()) + prefixes
        anycast = subnet.prefix.network_address if subnet.prefix.prefixlen < 128 else None
        return cls(subnet, address_owner, prefix_owner, addresses_of, prefixes_of, anycast)


def _aligned(address: IPv6Address, length: int) -> IPv6Address:
    return IPv6Address(int(address) & ~((1 << (128 - length)) - 1) & ((1 << 128) - 1))


class Allocator:
    """
    Chooses addresses and delegated prefixes for clients.

    Reads the store (L{ILeaseStore.get}, L{ILeaseStore.byClient}) and asks the
    subnet's policy; never writes: the engine turns the choice into a binding.

    @ivar policies: the policy of each subnet.
    @ivar policy: the default policy (the only one, unless per-subnet
        policies were given).
    """

    def __init__(self, store: ILeaseStore, policy: IAllocationPolicy | SubnetPolicies) -> None:
        """
        @param policy: one policy for every subnet, or one per subnet.
        """
        self.store = store
        self.policies = SubnetPolicies.of(policy)
        self.policy = self.policies.default
        self._indexes: dict[int, _SubnetIndex] = {}
        # Adapting a policy to IFailoverPolicy / IRenewalPolicy asks
        # zope.interface every time: done once per policy object.
        self._adapted: dict[
            int, tuple[IAllocationPolicy, IFailoverPolicy | None, IRenewalPolicy | None]
        ] = {}

    def _adapt(
        self, policy: IAllocationPolicy
    ) -> tuple[IAllocationPolicy, IFailoverPolicy | None, IRenewalPolicy | None]:
        """C{policy}, and C{policy} as an L{IFailoverPolicy} and an L{IRenewalPolicy}."""
        adapted = self._adapted.get(id(policy))
        if adapted is None or adapted[0] is not policy:
            adapted = (policy, IFailoverPolicy(policy, None), IRenewalPolicy(policy, None))
            self._adapted[id(policy)] = adapted
        return adapted

    def _index(self, subnet: SubnetConfig) -> _SubnetIndex:
        index = self._indexes.get(id(subnet))
        if index is None or index.subnet is not subnet:
            index = _SubnetIndex.build(subnet)
            self._indexes[id(subnet)] = index
        return index

    # --- what belongs to the link -------------------------------------------

    def reservedAddresses(self, subnet: SubnetConfig, duid: bytes) -> tuple[IPv6Address, ...]:
        """The addresses reserved for this DUID on this subnet."""
        return self._index(subnet).addresses_of.get(duid, ())

    def reservedPrefixes(
        self, subnet: SubnetConfig, duid: bytes
    ) -> tuple[tuple[IPv6Address, int], ...]:
        """The prefixes reserved for this DUID on this subnet, as (address, length)."""
        return self._index(subnet).prefixes_of.get(duid, ())

    def addressAppropriate(self, subnet: SubnetConfig, address: IPv6Address, duid: bytes) -> bool:
        """
        May this client hold this address on this link, by configuration?
        True for an address of one of the subnet's pools (not reserved for
        someone else) or one reserved for this client.
        """
        owner = self._index(subnet).address_owner.get(address)
        if owner is not None:
            return owner == duid
        return any(address in pool for pool in subnet.pools)

    def prefixAppropriate(
        self, subnet: SubnetConfig, address: IPv6Address, length: int, duid: bytes
    ) -> bool:
        """
        May this client hold this delegated prefix on this link, by
        configuration?  True for an aligned prefix of a PD pool's delegated
        length, or one reserved for this client.
        """
        owner = self._index(subnet).prefix_owner.get((address, length))
        if owner is not None:
            return owner == duid
        return any(
            length == pool.delegated_length
            and address in pool.prefix
            and _aligned(address, length) == address
            for pool in subnet.pd_pools
        )

    def appropriate(
        self,
        subnet: SubnetConfig,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        duid: bytes,
    ) -> bool:
        """
        L{addressAppropriate} for an address, L{prefixAppropriate} for a
        delegated prefix.
        """
        if lease_type is LeaseType.NA:
            return self.addressAppropriate(subnet, address, duid)
        return self.prefixAppropriate(subnet, address, prefix_length, duid)

    def withdrawable(
        self,
        subnet: SubnetConfig,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        A lease this IA lists in a Renew or Rebind that it does not get:
        may the Reply give it lifetime 0?  Yes when it is not appropriate on
        this link, or when the subnet's policy does not provide
        L{IRenewalPolicy}; else the policy's C{mayWithdraw} decides (a
        lease of a failover partner's pool that our possibly stale record
        stops us renewing is left out of the Reply).
        """
        if not self.appropriate(subnet, lease_type, address, prefix_length, duid):
            return True
        _, _, renewals = self._adapt(self.policies.policyFor(subnet))
        if renewals is None:
            return True
        existing = self.store.get(address, prefix_length)
        return renewals.mayWithdraw(lease_type, address, prefix_length, existing, duid, iaid, now)

    def renewable(
        self,
        subnet: SubnetConfig,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        May this IA keep this lease, which its Renew or Rebind lists beside
        the lease it gets?  Then the engine renews it too (RFC 8415 section
        18.3.4) rather than take it away while its lifetime runs.

        The same test as for the lease a renewal lists first (L{addressFor}
        and L{prefixFor} with C{probe=False}): appropriate on this link (a
        pool or this client's reservation, not the anycast address), and
        the IA's own ACTIVE binding, or a binding this server has no
        current record of for the client that the policy lets it renew
        (C{mayRenew}: a lease the partner granted while the update was cut
        off, or a lost database).  Not when the client has a reservation of
        that kind here: a reservation replaces the IA's other bindings on
        purpose.

        An IA comes to hold two leases when the two servers of a pair, cut
        off from each other, each grant it one (a client that starts over
        after a Decline, say); it keeps both until it lets one go.
        """
        index = self._index(subnet)
        if lease_type is LeaseType.NA:
            if index.addresses_of.get(duid) or address == index.anycast:
                return False
        elif index.prefixes_of.get(duid):
            return False
        if not self.appropriate(subnet, lease_type, address, prefix_length, duid):
            return False
        got = self._availability(
            subnet, lease_type, address, prefix_length, duid, iaid, now, renewal=True
        )
        return got is not _Avail.NO

    # --- availability -------------------------------------------------------

    def available(
        self,
        subnet: SubnetConfig,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        """
        May this IA be given this address or prefix now?  Its own ACTIVE
        binding: yes.  Reserved for another DUID, or held by anyone else's
        ACTIVE, ABANDONED, PENDING-FREE or RESET binding: no.  Otherwise the
        subnet's policy decides.
        """
        return (
            self._availability(subnet, lease_type, address, prefix_length, duid, iaid, now)
            is not _Avail.NO
        )

    def _availability(
        self,
        subnet: SubnetConfig,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        duid: bytes,
        iaid: int,
        now: float,
        renewal: bool = False,
    ) -> _Avail:
        """
        L{available}, and whether the candidate is in the partner's pool.

        @param renewal: the client lists this lease in a Renew or Rebind:
            ask the policy's C{mayRenew} when it provides L{IRenewalPolicy}.
        """
        index = self._index(subnet)
        # (Empty tables: no reservations, no hashing of the key.)
        if prefix_length == 128:
            owner = index.address_owner.get(address) if index.address_owner else None
        elif index.prefix_owner:
            owner = index.prefix_owner.get((address, prefix_length))
        else:
            owner = None
        if owner is not None and owner != duid:
            return _Avail.NO
        existing = self.store.get(address, prefix_length)
        policy, failover, renewalPolicy = self._adapt(self.policies.policyFor(subnet))
        renewals = renewalPolicy if renewal else None
        if existing is not None:
            if existing.state is BindingState.ACTIVE:
                return _Avail.OWN if existing.heldBy(duid, iaid) else _Avail.NO
            if existing.state not in _REUSABLE and not (
                # A lease this very IA declined here, which a failover
                # partner not told of the Decline may have given it again:
                # the renewal policy decides (mayRenew).
                renewals is not None
                and existing.state is BindingState.ABANDONED
                and existing.heldBy(duid, iaid)
            ):
                return _Avail.NO
        if renewals is not None:
            allowed = renewals.mayRenew(
                lease_type, address, prefix_length, existing, duid, iaid, now
            )
        else:
            allowed = policy.mayAllocate(
                lease_type, address, prefix_length, existing, duid, iaid, now
            )
        if not allowed:
            return _Avail.NO
        if (
            failover is not None
            and owner is None
            and (existing is None or not existing.heldBy(duid, iaid))
            and not failover.isOwn(lease_type, address, prefix_length, existing)
        ):
            return _Avail.PARTNER
        return _Avail.OWN

    def _ownBindings(self, duid: bytes, iaid: int, lease_type: LeaseType) -> list[Lease]:
        """The IA's reusable bindings, ACTIVE ones first, then the most recent."""
        own = [
            lease
            for lease in self.store.byClient(duid, iaid, lease_type)
            if lease.state in _OWN_REUSABLE
        ]
        own.sort(key=lambda lease: (lease.state is not BindingState.ACTIVE, -lease.cltt))
        return own

    # --- addresses ----------------------------------------------------------

    def addressFor(
        self,
        subnet: SubnetConfig,
        duid: bytes,
        iaid: int,
        hint: IPv6Address | None,
        now: float,
        *,
        exclude: Container[tuple[IPv6Address, int]] = _NO_EXCLUDE,
        probe: bool = True,
    ) -> IPv6Address | None:
        """
        The address this IA_NA should hold on this subnet, or C{None}.

        In order: an address reserved for the DUID, the IA's own binding if
        still appropriate, the hint if it is a free pool address, then the
        hash probe of each pool.  With a failover policy, a hint or probed
        address from the partner's pool comes only after all of these
        (module docstring: own pool first).  Renewals (C{probe=False}): the
        hint, the address the client lists, comes before the IA's own
        bindings, and is put to C{mayRenew} (module docstring).

        @param exclude: (address, 128) keys already given out in this
            exchange (not yet in the store).
        @param probe: C{False} to stop before the hash probe (renewals only
            re-create a binding the client already knows).
        """
        index = self._index(subnet)
        for address in index.addresses_of.get(duid, ()):
            if (address, 128) not in exclude and self.available(
                subnet, LeaseType.NA, address, 128, duid, iaid, now
            ):
                return address
        hintUsable = (
            hint is not None
            and hint != index.anycast
            and (hint, 128) not in exclude
            and any(hint in pool for pool in subnet.pools)
        )
        if not probe:
            if hintUsable:
                assert hint is not None
                got = self._availability(
                    subnet, LeaseType.NA, hint, 128, duid, iaid, now, renewal=True
                )
                if got is not _Avail.NO:
                    return hint
            hintUsable = False  # tried
        for lease in self._ownBindings(duid, iaid, LeaseType.NA):
            if (
                lease.key not in exclude
                and lease.address != index.anycast
                and self.addressAppropriate(subnet, lease.address, duid)
                and self.available(subnet, LeaseType.NA, lease.address, 128, duid, iaid, now)
            ):
                return lease.address
        fallback: IPv6Address | None = None
        if hintUsable:
            assert hint is not None
            got = self._availability(subnet, LeaseType.NA, hint, 128, duid, iaid, now)
            if got is _Avail.OWN:
                return hint
            if got is _Avail.PARTNER:
                fallback = hint
        if not probe or not subnet.pools:
            return fallback
        h = stableHash(duid, iaid, b"na")
        for pool in _rotate(subnet.pools, h):
            found, partners = self._probeAddressPool(
                subnet, index, pool, h, duid, iaid, now, exclude
            )
            if found is not None:
                return found
            if fallback is None:
                fallback = partners
        return fallback

    def _probeAddressPool(
        self,
        subnet: SubnetConfig,
        index: _SubnetIndex,
        pool: AddressPool,
        h: int,
        duid: bytes,
        iaid: int,
        now: float,
        exclude: Container[tuple[IPv6Address, int]],
    ) -> tuple[IPv6Address | None, IPv6Address | None]:
        """
        Two passes over the probe sequence, with a failover policy: first
        the candidates of this server's own half of the pool
        (C{isOwn(NA, candidate, 128, None)}: addresses split by the low
        bit), then, only if none is available, the partner's half.  A
        candidate of the partner's half can be C{OWN} only when this IA
        holds it or it is reserved for this client, which L{addressFor}
        tried before probing; so the result is the single pass's, and the
        common case (an own address free) reads no candidate of the
        partner's half, half of a single pass's reads on a failover server.

        @return: the first own candidate of the probe, and the first one
            allowed from the partner's pool (before it).
        """
        failover = self._adapt(self.policies.policyFor(subnet))[1]
        first = int(pool.first)
        partners: IPv6Address | None = None
        partnersHalf = False
        for onlyPartners in (False, True) if failover is not None else (False,):
            for slot in probeSequence(h, pool.size):
                candidate = IPv6Address(first + slot)
                if candidate == index.anycast or (candidate, 128) in exclude:
                    continue
                if failover is not None and not failover.isOwn(LeaseType.NA, candidate, 128, None):
                    if not onlyPartners:
                        partnersHalf = True
                        continue
                elif onlyPartners:
                    continue
                got = self._availability(subnet, LeaseType.NA, candidate, 128, duid, iaid, now)
                if got is _Avail.OWN:
                    return candidate, partners
                if got is _Avail.PARTNER and partners is None:
                    partners = candidate
            if not partnersHalf:
                break
        return None, partners

    # --- prefixes -----------------------------------------------------------

    def prefixFor(
        self,
        subnet: SubnetConfig,
        duid: bytes,
        iaid: int,
        hint: tuple[IPv6Address, int] | None,
        now: float,
        *,
        exclude: Container[tuple[IPv6Address, int]] = _NO_EXCLUDE,
        probe: bool = True,
    ) -> tuple[IPv6Address, int] | None:
        """
        The (prefix address, delegated length) this IA_PD should hold, or
        C{None}.

        In order: a prefix reserved for the DUID, the IA's own binding if
        still appropriate, the hint (its address rounded down to a pool's
        delegated length; a hint of C{::/len} only puts the pools delegating
        C{/len} first), then the hash probe of each pool: slot C{i} of a pool
        is C{base + (i << (128 - delegated_length))}.  With a failover
        policy, a hinted or probed prefix from the partner's pool comes only
        after all of these (module docstring: own pool first).  Renewals
        (C{probe=False}): the hint, when it is exactly a prefix of a pool's
        delegated length (the prefix the client lists), comes before the
        IA's own bindings and is put to C{mayRenew} (module docstring).
        """
        for key in self._index(subnet).prefixes_of.get(duid, ()):
            if key not in exclude and self.available(
                subnet, LeaseType.PD, key[0], key[1], duid, iaid, now
            ):
                return key
        tried: tuple[IPv6Address, int] | None = None
        if (
            not probe
            and hint is not None
            and hint not in exclude
            and any(
                hint[1] == pool.delegated_length and hint[0] in pool.prefix
                for pool in subnet.pd_pools
            )
            and _aligned(hint[0], hint[1]) == hint[0]
        ):
            tried = hint
            got = self._availability(
                subnet, LeaseType.PD, hint[0], hint[1], duid, iaid, now, renewal=True
            )
            if got is not _Avail.NO:
                return hint
        for lease in self._ownBindings(duid, iaid, LeaseType.PD):
            if (
                lease.key not in exclude
                and self.prefixAppropriate(subnet, lease.address, lease.prefix_length, duid)
                and self.available(
                    subnet, LeaseType.PD, lease.address, lease.prefix_length, duid, iaid, now
                )
            ):
                return lease.key
        fallback: tuple[IPv6Address, int] | None = None
        if hint is not None and hint[0] != _UNSPECIFIED:
            for pool in subnet.pd_pools:
                if hint[0] in pool.prefix:
                    key = (_aligned(hint[0], pool.delegated_length), pool.delegated_length)
                    if key in exclude or key == tried:
                        continue
                    got = self._availability(subnet, LeaseType.PD, key[0], key[1], duid, iaid, now)
                    if got is _Avail.OWN or (got is _Avail.PARTNER and not probe):
                        return key
                    if got is _Avail.PARTNER and fallback is None:
                        fallback = key
        if not probe or not subnet.pd_pools:
            return fallback
        h = stableHash(duid, iaid, b"pd")
        pools: list[PrefixPool] = list(_rotate(subnet.pd_pools, h))
        if hint is not None and hint[1]:
            # Stable sort: the pools delegating the hinted length first.
            pools.sort(key=lambda pool: pool.delegated_length != hint[1])
        for pool in pools:
            found, partners = self._probePrefixPool(subnet, pool, h, duid, iaid, now, exclude)
            if found is not None:
                return found
            if fallback is None:
                fallback = partners
        return fallback

    def _probePrefixPool(
        self,
        subnet: SubnetConfig,
        pool: PrefixPool,
        h: int,
        duid: bytes,
        iaid: int,
        now: float,
        exclude: Container[tuple[IPv6Address, int]],
    ) -> tuple[tuple[IPv6Address, int] | None, tuple[IPv6Address, int] | None]:
        """
        @return: the first own candidate of the probe, and the first one
            allowed from the partner's pool (before it).
        """
        base = int(pool.prefix.network_address)
        length = pool.delegated_length
        shift = 128 - length
        partners: tuple[IPv6Address, int] | None = None
        for slot in probeSequence(h, pool.size):
            key = (IPv6Address(base + (slot << shift)), length)
            if key in exclude:
                continue
            got = self._availability(subnet, LeaseType.PD, key[0], length, duid, iaid, now)
            if got is _Avail.OWN:
                return key, partners
            if got is _Avail.PARTNER and partners is None:
                partners = key
        return None, partners


def _rotate(items: tuple[_T, ...], h: int) -> Iterator[_T]:
    """C{items}, starting at the one the hash picks, so that clients spread over pools."""
    if not items:
        return
    start = h % len(items)
    yield from items[start:]
    yield from items[:start]
