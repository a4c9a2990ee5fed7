"""
Tests for L{dhcp6ha.allocation}.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Any

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dhcp6ha.allocation import (
    MAX_PROBES,
    Allocator,
    StandalonePolicy,
    SubnetPolicies,
    probeSequence,
    stableHash,
)
from dhcp6ha.config import (
    AddressPool,
    FailoverConfig,
    FailoverRole,
    IdentityKind,
    PrefixPool,
    Reservation,
    ServerConfig,
    ServerSection,
    SubnetConfig,
)
from dhcp6ha.interfaces import IAllocationPolicy, IFailoverPolicy, IRenewalPolicy
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import MessageType
from dhcp6ha.testing import MemoryLeaseStore

NOW = 1_700_000_000.0


def clientDuid(n: int) -> bytes:
    """A DUID-LL for client number C{n}."""
    return b"\x00\x03\x00\x01" + n.to_bytes(6, "big")


def addressPool(first: str, last: str) -> AddressPool:
    return AddressPool(IPv6Address(first), IPv6Address(last))


def makeSubnet(**overrides: Any) -> SubnetConfig:
    """
    A subnet 2001:db8:1::/64 on eth0 with a 256-address pool and a
    2001:db8:100::/40 pool delegating /56s, overridable by keyword.
    """
    values: dict[str, Any] = {
        "name": "lan",
        "prefix": IPv6Network("2001:db8:1::/64"),
        "interface": "eth0",
        "pools": (addressPool("2001:db8:1::100", "2001:db8:1::1ff"),),
        "pd_pools": (PrefixPool(IPv6Network("2001:db8:100::/40"), 56),),
        "reservations": (),
        "preferred_lifetime": 3000,
        "valid_lifetime": 4000,
        "t1": 1000,
        "t2": 1600,
        "pd_preferred_lifetime": 5000,
        "pd_valid_lifetime": 7000,
        "rapid_commit": False,
        "preference": 0,
        "dns_servers": (),
        "domain_search": (),
        "sol_max_rt": None,
        "information_refresh_time": None,
    }
    values.update(overrides)
    return SubnetConfig(**values)


def activeLease(
    address: IPv6Address,
    duid: bytes,
    iaid: int = 1,
    prefix_length: int = 128,
    state: BindingState = BindingState.ACTIVE,
    now: float = NOW,
) -> Lease:
    return Lease(
        lease_type=LeaseType.NA if prefix_length == 128 else LeaseType.PD,
        address=address,
        prefix_length=prefix_length,
        state=state,
        duid=duid,
        iaid=iaid,
        start_time_of_state=now,
        cltt=now,
        preferred_lifetime=3000,
        valid_lifetime=4000,
        expires=now + 4000,
    )


class CountingStore(MemoryLeaseStore):
    """A L{MemoryLeaseStore} counting its point reads."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, address: IPv6Address, prefix_length: int) -> Lease | None:
        self.gets += 1
        return super().get(address, prefix_length)


@implementer(IAllocationPolicy)
class EvenOnlyPolicy(StandalonePolicy):
    """Allows only addresses whose last bit is 0 (like a failover secondary)."""

    def __init__(self) -> None:
        self.asked: list[IPv6Address] = []

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
        self.asked.append(address)
        return int(address) % 2 == 0


@implementer(IFailoverPolicy)
class OwnFirstPolicy(StandalonePolicy):
    """
    A failover policy as in PARTNER-DOWN once MCLT has passed: everything
    free may be allocated, the partner's pool included.  Own addresses are
    the odd ones (a primary's); own prefixes are the FREE-BACKUP ones (a
    secondary's).  Records the isOwn calls.
    """

    def __init__(self) -> None:
        self.ownAsked: list[tuple[IPv6Address, int]] = []

    def respondsToServer(self, msg_type: int, server_id: bytes) -> bool:
        return True

    def isOwn(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
    ) -> bool:
        self.ownAsked.append((address, prefix_length))
        if lease_type is LeaseType.PD:
            return existing is not None and existing.state is BindingState.FREE_BACKUP
        return int(address) % 2 == 1


def freeBackup(address: str, length: int) -> Lease:
    """A FREE-BACKUP prefix record (the secondary's pool)."""
    return evolve(
        activeLease(IPv6Address(address), b"", 0, prefix_length=length),
        state=BindingState.FREE_BACKUP,
    )


def makeFailover(name: str, *subnets: str) -> FailoverConfig:
    """A [failover:NAME] relationship covering C{subnets}."""
    return FailoverConfig(
        name=name,
        role=FailoverRole.PRIMARY,
        partner_address=IPv6Address("2001:db8::2"),
        partner_port=647,
        listen_address=IPv6Address("::"),
        listen_port=647,
        certificate="cert.pem",
        key="key.pem",
        ca="ca.pem",
        partner_identity="secondary.example.net",
        partner_identity_kind=IdentityKind.DNS_NAME,
        mclt=3600,
        heartbeat_interval=10.0,
        unreachable_after=30.0,
        max_unacked=100,
        max_clock_skew=5.0,
        auto_partner_down=0,
        prefix_share=0.5,
        handshake_timeout=10.0,
        idle_timeout=60.0,
        subnets=subnets,
    )


class StandalonePolicyTests(SynchronousTestCase):
    """L{StandalonePolicy} allows everything."""

    def test_interface(self) -> None:
        """It provides L{IAllocationPolicy}."""
        self.assertTrue(verifyObject(IAllocationPolicy, StandalonePolicy()))

    def test_allowsEverything(self) -> None:
        """Any allocation, any lifetime, any message not naming another server."""
        policy = StandalonePolicy()
        self.assertTrue(
            policy.mayAllocate(LeaseType.NA, IPv6Address("2001:db8::1"), 128, None, b"x", 1, NOW)
        )
        self.assertEqual(policy.maxValidLifetime(None, 86400, NOW), 86400)
        for msg_type in MessageType:
            self.assertTrue(policy.respondsTo(msg_type, True))
        self.assertTrue(policy.respondsTo(MessageType.SOLICIT, False))
        self.assertTrue(policy.respondsTo(MessageType.REBIND, False))
        policy.bindingChanged(activeLease(IPv6Address("2001:db8::1"), b"x"))

    def test_othersRequest(self) -> None:
        """A Request, Renew, Release or Decline naming another server is not answered."""
        policy = StandalonePolicy()
        for msg_type in (
            MessageType.REQUEST,
            MessageType.RENEW,
            MessageType.RELEASE,
            MessageType.DECLINE,
        ):
            self.assertFalse(policy.respondsTo(msg_type, False))


class HashTests(SynchronousTestCase):
    """The candidate hash and the probe sequence."""

    def test_stable(self) -> None:
        """
        The hash is the same in every process (not Python's salted
        C{hash}): a known value, and differs by IAID, DUID and salt.
        """
        h = stableHash(clientDuid(1), 1, b"na")
        self.assertEqual(h, stableHash(clientDuid(1), 1, b"na"))
        self.assertLessEqual(h.bit_length(), 128)
        self.assertNotEqual(h, stableHash(clientDuid(1), 2, b"na"))
        self.assertNotEqual(h, stableHash(clientDuid(2), 1, b"na"))
        self.assertNotEqual(h, stableHash(clientDuid(1), 1, b"pd"))

    def test_knownValue(self) -> None:
        """The hash is blake2b-128 of salt, NUL, IAID (4 bytes) and DUID."""
        from hashlib import blake2b

        duid = clientDuid(7)
        expected = int.from_bytes(
            blake2b(b"na\0" + (9).to_bytes(4, "big") + duid, digest_size=16).digest(), "big"
        )
        self.assertEqual(stableHash(duid, 9, b"na"), expected)
        # Pinned: changing the hash would move every client's candidate.
        self.assertEqual(stableHash(duid, 9, b"na"), 0x83D0E4FE2D08472879BABE8AFE5C5E5C)

    def test_probeCoversSmallPools(self) -> None:
        """For any pool no larger than the probe bound, the sequence visits every slot once."""
        for size in list(range(1, 70)) + [97, 128, 255, 256]:
            for n in range(5):
                h = stableHash(clientDuid(n), size, b"na")
                seq = list(probeSequence(h, size))
                self.assertEqual(sorted(seq), list(range(size)), size)

    def test_probeBounded(self) -> None:
        """A huge pool is probed at most L{MAX_PROBES} times, all distinct."""
        seq = list(probeSequence(stableHash(b"x", 1, b"na"), 1 << 64))
        self.assertEqual(len(seq), MAX_PROBES)
        self.assertEqual(len(set(seq)), MAX_PROBES)
        self.assertTrue(all(0 <= i < (1 << 64) for i in seq))

    def test_emptyPool(self) -> None:
        """A pool of size 0 has no candidates."""
        self.assertEqual(list(probeSequence(12345, 0)), [])


class AddressTests(SynchronousTestCase):
    """L{Allocator.addressFor}."""

    def setUp(self) -> None:
        self.store = CountingStore()
        self.allocator = Allocator(self.store, StandalonePolicy())

    def allocate(self, subnet: SubnetConfig, n: int, iaid: int = 1) -> IPv6Address | None:
        """Allocate for client C{n} and commit the binding."""
        address = self.allocator.addressFor(subnet, clientDuid(n), iaid, None, NOW)
        if address is not None:
            self.store.commit([activeLease(address, clientDuid(n), iaid)])
        return address

    def test_candidateStable(self) -> None:
        """The same client gets the same candidate from a fresh allocator and store."""
        subnet = makeSubnet()
        first = self.allocator.addressFor(subnet, clientDuid(1), 1, None, NOW)
        other = Allocator(MemoryLeaseStore(), StandalonePolicy())
        self.assertEqual(other.addressFor(subnet, clientDuid(1), 1, None, NOW), first)
        self.assertIn(first, subnet.pools[0])

    def test_clientsSpread(self) -> None:
        """Different clients start at different places of the pool."""
        subnet = makeSubnet()
        candidates = {
            self.allocator.addressFor(subnet, clientDuid(n), 1, None, NOW) for n in range(20)
        }
        self.assertGreater(len(candidates), 10)

    def test_fillSmallPool(self) -> None:
        """
        Sixteen clients fill a sixteen-address pool, each with a different
        address; the seventeenth gets nothing.
        """
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::1f"),))
        got = [self.allocate(subnet, n) for n in range(16)]
        self.assertNotIn(None, got)
        self.assertEqual(len(set(got)), 16)
        self.assertTrue(all(address in subnet.pools[0] for address in got))
        self.assertIsNone(self.allocate(subnet, 16))

    def test_largePoolCheap(self) -> None:
        """
        A /64 range is never enumerated: a new client costs one store read
        when its first candidate is free.
        """
        subnet = makeSubnet(
            pools=(addressPool("2001:db8:1::", "2001:db8:1:0:ffff:ffff:ffff:ffff"),)
        )
        for n in range(500):
            before = self.store.gets
            self.assertIsNotNone(self.allocate(subnet, n))
            self.assertLessEqual(self.store.gets - before, 2)

    def test_existingFirst(self) -> None:
        """A client that holds a binding gets it back, whatever its hint."""
        subnet = makeSubnet()
        held = IPv6Address("2001:db8:1::1aa")
        self.store.commit([activeLease(held, clientDuid(1))])
        self.assertEqual(
            self.allocator.addressFor(
                subnet, clientDuid(1), 1, IPv6Address("2001:db8:1::150"), NOW
            ),
            held,
        )

    def test_ownExpiredBack(self) -> None:
        """A client's own EXPIRED or RELEASED binding is its first choice."""
        subnet = makeSubnet()
        for state in (BindingState.EXPIRED, BindingState.RELEASED):
            held = IPv6Address("2001:db8:1::1ab")
            self.store.commit([activeLease(held, clientDuid(1), state=state)])
            self.assertEqual(self.allocator.addressFor(subnet, clientDuid(1), 1, None, NOW), held)

    def test_hint(self) -> None:
        """A free hint inside a pool is honoured; one outside every pool is not."""
        subnet = makeSubnet()
        hint = IPv6Address("2001:db8:1::150")
        self.assertEqual(self.allocator.addressFor(subnet, clientDuid(1), 1, hint, NOW), hint)
        outside = IPv6Address("2001:db8:1::5000")
        got = self.allocator.addressFor(subnet, clientDuid(1), 1, outside, NOW)
        self.assertNotEqual(got, outside)
        self.assertIn(got, subnet.pools[0])

    def test_takenHint(self) -> None:
        """A hint held by another client's ACTIVE binding is not given."""
        subnet = makeSubnet()
        hint = IPv6Address("2001:db8:1::150")
        self.store.commit([activeLease(hint, clientDuid(2))])
        got = self.allocator.addressFor(subnet, clientDuid(1), 1, hint, NOW)
        self.assertNotEqual(got, hint)

    def test_reusableStates(self) -> None:
        """
        Another client's FREE, FREE-BACKUP, EXPIRED and RELEASED bindings may
        be reused; ACTIVE, ABANDONED, PENDING-FREE and RESET ones may not.
        """
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::10"),))
        address = IPv6Address("2001:db8:1::10")
        for state, free in [
            (BindingState.FREE, True),
            (BindingState.FREE_BACKUP, True),
            (BindingState.EXPIRED, True),
            (BindingState.RELEASED, True),
            (BindingState.ACTIVE, False),
            (BindingState.ABANDONED, False),
            (BindingState.PENDING_FREE, False),
            (BindingState.RESET, False),
        ]:
            self.store.commit([activeLease(address, clientDuid(2), state=state)])
            got = self.allocator.addressFor(subnet, clientDuid(1), 1, None, NOW)
            self.assertEqual(got, address if free else None, state)

    def test_expiredButActiveTaken(self) -> None:
        """An ACTIVE binding past its expiry is still taken until reclaimed."""
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::10"),))
        lease = activeLease(IPv6Address("2001:db8:1::10"), clientDuid(2), now=NOW - 10_000)
        self.store.commit([lease])
        self.assertIsNone(self.allocator.addressFor(subnet, clientDuid(1), 1, None, NOW))

    def test_policyObeyed(self) -> None:
        """Candidates the policy refuses are skipped; the policy is asked about each."""
        policy = EvenOnlyPolicy()
        allocator = Allocator(self.store, policy)
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::1f"),))
        got = []
        for n in range(10):
            address = allocator.addressFor(subnet, clientDuid(n), 1, None, NOW)
            if address is not None:
                self.store.commit([activeLease(address, clientDuid(n))])
                got.append(address)
        self.assertEqual(len(got), 8)
        self.assertTrue(all(int(a) % 2 == 0 for a in got))
        self.assertTrue(policy.asked)

    def test_ownActiveNoPolicy(self) -> None:
        """A client's own ACTIVE binding is its own: the policy is not asked."""
        policy = EvenOnlyPolicy()
        allocator = Allocator(self.store, policy)
        held = IPv6Address("2001:db8:1::111")
        self.store.commit([activeLease(held, clientDuid(1))])
        self.assertEqual(allocator.addressFor(makeSubnet(), clientDuid(1), 1, None, NOW), held)
        self.assertEqual(policy.asked, [])

    def test_anycastSkipped(self) -> None:
        """The subnet-router anycast address is never given from a pool."""
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::", "2001:db8:1::3"),))
        got = {self.allocate(subnet, n) for n in range(4)}
        self.assertEqual(
            got,
            {
                IPv6Address("2001:db8:1::1"),
                IPv6Address("2001:db8:1::2"),
                IPv6Address("2001:db8:1::3"),
                None,
            },
        )
        self.assertIsNone(
            self.allocator.addressFor(subnet, clientDuid(9), 1, IPv6Address("2001:db8:1::"), NOW)
        )

    def test_exclude(self) -> None:
        """Keys already given in this exchange are skipped."""
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::11"),))
        first = self.allocator.addressFor(subnet, clientDuid(1), 1, None, NOW)
        assert first is not None
        second = self.allocator.addressFor(
            subnet, clientDuid(1), 2, None, NOW, exclude={(first, 128)}
        )
        assert second is not None
        self.assertNotEqual(first, second)
        third = self.allocator.addressFor(
            subnet, clientDuid(1), 3, None, NOW, exclude={(first, 128), (second, 128)}
        )
        self.assertIsNone(third)

    def test_noProbe(self) -> None:
        """With C{probe=False} only reservations, own bindings and the hint count."""
        subnet = makeSubnet()
        self.assertIsNone(
            self.allocator.addressFor(subnet, clientDuid(1), 1, None, NOW, probe=False)
        )
        hint = IPv6Address("2001:db8:1::123")
        self.assertEqual(
            self.allocator.addressFor(subnet, clientDuid(1), 1, hint, NOW, probe=False), hint
        )

    def test_severalPools(self) -> None:
        """When one pool is full, the next is probed."""
        subnet = makeSubnet(
            pools=(
                addressPool("2001:db8:1::10", "2001:db8:1::11"),
                addressPool("2001:db8:1::20", "2001:db8:1::21"),
            )
        )
        got = {self.allocate(subnet, n) for n in range(5)}
        self.assertEqual(len(got), 5)  # four addresses and None
        self.assertIn(None, got)


class ReservationTests(SynchronousTestCase):
    """Reservations by DUID win, and are never given to others."""

    def setUp(self) -> None:
        self.store = MemoryLeaseStore()
        self.allocator = Allocator(self.store, StandalonePolicy())
        self.reserved = IPv6Address("2001:db8:1::10")
        self.outside = IPv6Address("2001:db8:1::9999")
        self.prefix = IPv6Network("2001:db8:100:ab00::/56")
        self.subnet = makeSubnet(
            pools=(addressPool("2001:db8:1::10", "2001:db8:1::13"),),
            pd_pools=(PrefixPool(IPv6Network("2001:db8:100:a800::/54"), 56),),
            reservations=(
                Reservation("fixed", clientDuid(100), (self.reserved,), (self.prefix,)),
                Reservation("outside", clientDuid(101), (self.outside,), ()),
            ),
        )

    def test_reservedWins(self) -> None:
        """The reserved client gets its address even with another hint or binding."""
        other = IPv6Address("2001:db8:1::12")
        self.store.commit([activeLease(other, clientDuid(100))])
        self.assertEqual(
            self.allocator.addressFor(self.subnet, clientDuid(100), 1, other, NOW), self.reserved
        )
        self.assertEqual(
            self.allocator.addressFor(self.subnet, clientDuid(101), 1, None, NOW), self.outside
        )
        self.assertEqual(
            self.allocator.prefixFor(self.subnet, clientDuid(100), 1, None, NOW),
            (self.prefix.network_address, 56),
        )

    def test_notForOthers(self) -> None:
        """Other clients never get a reserved address or prefix, even as a hint."""
        given = set()
        for n in range(5):
            address = self.allocator.addressFor(self.subnet, clientDuid(n), 1, self.reserved, NOW)
            if address is not None:
                self.store.commit([activeLease(address, clientDuid(n))])
            given.add(address)
        self.assertNotIn(self.reserved, given)
        self.assertEqual(len(given - {None}), 3)
        prefixes = set()
        for n in range(4):
            key = self.allocator.prefixFor(self.subnet, clientDuid(n), 1, None, NOW)
            if key is not None:
                self.store.commit([activeLease(key[0], clientDuid(n), prefix_length=key[1])])
            prefixes.add(key)
        self.assertNotIn((self.prefix.network_address, 56), prefixes)
        self.assertIn(None, prefixes)

    def test_appropriate(self) -> None:
        """Reserved leases are appropriate for their client only; pool ones for anyone."""
        self.assertTrue(
            self.allocator.addressAppropriate(self.subnet, self.outside, clientDuid(101))
        )
        self.assertFalse(
            self.allocator.addressAppropriate(self.subnet, self.outside, clientDuid(1))
        )
        self.assertFalse(
            self.allocator.addressAppropriate(self.subnet, self.reserved, clientDuid(1))
        )
        self.assertTrue(
            self.allocator.addressAppropriate(
                self.subnet, IPv6Address("2001:db8:1::11"), clientDuid(1)
            )
        )
        self.assertTrue(
            self.allocator.prefixAppropriate(
                self.subnet, self.prefix.network_address, 56, clientDuid(100)
            )
        )
        self.assertFalse(
            self.allocator.prefixAppropriate(
                self.subnet, self.prefix.network_address, 56, clientDuid(1)
            )
        )
        self.assertEqual(
            self.allocator.reservedAddresses(self.subnet, clientDuid(100)), (self.reserved,)
        )
        self.assertEqual(
            self.allocator.reservedPrefixes(self.subnet, clientDuid(100)),
            ((self.prefix.network_address, 56),),
        )

    def test_reservedHeldByOther(self) -> None:
        """
        A reserved address still held by another client (a reservation added
        later) is not taken from it: the reserved client gets a pool address.
        """
        self.store.commit([activeLease(self.reserved, clientDuid(5))])
        got = self.allocator.addressFor(self.subnet, clientDuid(100), 1, None, NOW)
        self.assertNotEqual(got, self.reserved)
        self.assertIsNotNone(got)


class PrefixTests(SynchronousTestCase):
    """L{Allocator.prefixFor}."""

    def setUp(self) -> None:
        self.store = CountingStore()
        self.allocator = Allocator(self.store, StandalonePolicy())

    def test_alignedInsidePool(self) -> None:
        """Every candidate is an aligned prefix of the delegated length inside the pool."""
        subnet = makeSubnet()
        pool = subnet.pd_pools[0]
        seen = set()
        for n in range(300):
            key = self.allocator.prefixFor(subnet, clientDuid(n), 1, None, NOW)
            assert key is not None
            address, length = key
            self.assertEqual(length, 56)
            network = IPv6Network((address, length))  # raises if not aligned
            self.assertTrue(network.subnet_of(pool.prefix))
            self.store.commit([activeLease(address, clientDuid(n), prefix_length=length)])
            seen.add(key)
        self.assertEqual(len(seen), 300)

    def test_fillSmallPool(self) -> None:
        """A /60 delegating /62s holds four clients; the fifth gets nothing."""
        subnet = makeSubnet(pd_pools=(PrefixPool(IPv6Network("2001:db8:200::/60"), 62),))
        got = []
        for n in range(5):
            key = self.allocator.prefixFor(subnet, clientDuid(n), 1, None, NOW)
            if key is not None:
                self.store.commit([activeLease(key[0], clientDuid(n), prefix_length=key[1])])
            got.append(key)
        self.assertIsNone(got[-1])
        self.assertEqual(
            sorted(k for k in got if k is not None),
            [(IPv6Address("2001:db8:200::") + (i << 66), 62) for i in range(4)],
        )

    def test_largePoolCheap(self) -> None:
        """A /32 delegating /64s (2**32 prefixes) costs about one read per client."""
        subnet = makeSubnet(pd_pools=(PrefixPool(IPv6Network("2001:db8::/32"), 64),))
        before = self.store.gets
        for n in range(200):
            self.assertIsNotNone(self.allocator.prefixFor(subnet, clientDuid(n), 1, None, NOW))
        self.assertLessEqual(self.store.gets - before, 200)

    def test_hint(self) -> None:
        """A hinted prefix in a pool is rounded to the delegated length and honoured."""
        subnet = makeSubnet()
        key = self.allocator.prefixFor(
            subnet, clientDuid(1), 1, (IPv6Address("2001:db8:100:4242::"), 64), NOW
        )
        self.assertEqual(key, (IPv6Address("2001:db8:100:4200::"), 56))

    def test_hintLength(self) -> None:
        """A hint of ::/len prefers the pools delegating /len."""
        subnet = makeSubnet(
            pd_pools=(
                PrefixPool(IPv6Network("2001:db8:100::/40"), 56),
                PrefixPool(IPv6Network("2001:db8:200::/40"), 48),
            )
        )
        for n in range(10):
            key = self.allocator.prefixFor(subnet, clientDuid(n), 1, (IPv6Address("::"), 48), NOW)
            assert key is not None
            self.assertEqual(key[1], 48)

    def test_ownBindingFirst(self) -> None:
        """A client holding a prefix gets it back."""
        subnet = makeSubnet()
        held = IPv6Address("2001:db8:100:1200::")
        self.store.commit([activeLease(held, clientDuid(1), prefix_length=56)])
        self.assertEqual(self.allocator.prefixFor(subnet, clientDuid(1), 1, None, NOW), (held, 56))
        # Not another IA of the same client.
        self.assertNotEqual(
            self.allocator.prefixFor(subnet, clientDuid(1), 2, (held, 56), NOW), (held, 56)
        )

    def test_ownBindingNoLongerInPool(self) -> None:
        """A held prefix outside every pool (configuration changed) is not given back."""
        subnet = makeSubnet()
        held = IPv6Address("2001:db8:999::")
        self.store.commit([activeLease(held, clientDuid(1), prefix_length=56)])
        key = self.allocator.prefixFor(subnet, clientDuid(1), 1, None, NOW)
        self.assertNotEqual(key, (held, 56))

    def test_noPools(self) -> None:
        """A subnet without PD pools delegates nothing."""
        subnet = makeSubnet(pd_pools=())
        self.assertIsNone(self.allocator.prefixFor(subnet, clientDuid(1), 1, None, NOW))

    def test_reusedExpiredOfOther(self) -> None:
        """Another client's EXPIRED prefix is reused when the pool is otherwise full."""
        subnet = makeSubnet(pd_pools=(PrefixPool(IPv6Network("2001:db8:200::/62"), 62),))
        lease = activeLease(IPv6Address("2001:db8:200::"), clientDuid(2), prefix_length=62)
        self.store.commit([evolve(lease, state=BindingState.EXPIRED)])
        self.assertEqual(
            self.allocator.prefixFor(subnet, clientDuid(1), 1, None, NOW),
            (IPv6Address("2001:db8:200::"), 62),
        )


class SubnetPoliciesTests(SynchronousTestCase):
    """L{SubnetPolicies}: which policy decides for each subnet."""

    def setUp(self) -> None:
        self.default = StandalonePolicy()
        self.pair = EvenOnlyPolicy()
        self.lan = makeSubnet()
        self.far = makeSubnet(name="far", prefix=IPv6Network("2001:db8:2::/64"), interface=None)

    def test_policyFor(self) -> None:
        """A named subnet gets its policy; others, and no subnet, the default."""
        policies = SubnetPolicies(self.default, {"far": self.pair})
        self.assertIs(policies.policyFor(self.far), self.pair)
        self.assertIs(policies.policyFor(self.lan), self.default)
        self.assertIs(policies.policyFor(None), self.default)

    def test_of(self) -> None:
        """C{of} wraps one policy for every subnet, and passes L{SubnetPolicies} through."""
        policies = SubnetPolicies.of(self.default)
        self.assertIs(policies.default, self.default)
        self.assertEqual(policies.bySubnet, {})
        self.assertIs(policies.policyFor(self.far), self.default)
        self.assertIs(SubnetPolicies.of(policies), policies)

    def test_ofRelationships(self) -> None:
        """
        The subnets of each relationship get its policy (m-to-1: two
        relationships and a subnet served alone).
        """
        other = EvenOnlyPolicy()
        config = ServerConfig(
            path="test.ini",
            server=ServerSection(
                interfaces=(),
                address=IPv6Address("::"),
                port=547,
                database=":memory:",
                duid=None,
                decline_quarantine=600,
                reclaim_interval=10.0,
                commit_delay=0.005,
            ),
            subnets=(
                self.lan,
                self.far,
                makeSubnet(name="alone", prefix=IPv6Network("2001:db8:3::/64"), interface=None),
            ),
            failover=(makeFailover("a", "lan"), makeFailover("b", "far")),
        )
        policies = SubnetPolicies.ofRelationships(
            config, self.default, {"a": self.pair, "b": other}
        )
        self.assertEqual(policies.bySubnet, {"lan": self.pair, "far": other})
        self.assertIs(policies.policyFor(config.subnetByName("alone")), self.default)
        self.assertRaises(
            ValueError, SubnetPolicies.ofRelationships, config, self.default, {"a": self.pair}
        )
        self.assertRaises(
            ValueError,
            SubnetPolicies.ofRelationships,
            config,
            self.default,
            {"a": self.pair, "b": other, "c": other},
        )

    def test_allocatorPerSubnet(self) -> None:
        """The allocator asks the policy of the subnet it allocates in."""
        store = MemoryLeaseStore()
        allocator = Allocator(store, SubnetPolicies(self.default, {"far": self.pair}))
        far = evolve(self.far, pools=(addressPool("2001:db8:2::10", "2001:db8:2::1f"),))
        for n in range(8):
            address = allocator.addressFor(far, clientDuid(n), 1, None, NOW)
            assert address is not None
            self.assertEqual(int(address) % 2, 0)
            store.commit([activeLease(address, clientDuid(n))])
        self.assertIsNone(allocator.addressFor(far, clientDuid(8), 1, None, NOW))
        asked = len(self.pair.asked)
        self.assertGreaterEqual(asked, 16)
        lan = makeSubnet(pools=(addressPool("2001:db8:1::11", "2001:db8:1::11"),))
        self.assertEqual(
            allocator.addressFor(lan, clientDuid(9), 1, None, NOW), IPv6Address("2001:db8:1::11")
        )
        self.assertEqual(len(self.pair.asked), asked)
        self.assertIs(allocator.policy, self.default)


class OwnPoolFirstTests(SynchronousTestCase):
    """
    With a failover policy, the allocator tries this server's own pool
    before the partner's (draft section 8.4.1).
    """

    def setUp(self) -> None:
        self.store = CountingStore()
        self.policy = OwnFirstPolicy()
        self.allocator = Allocator(self.store, self.policy)
        self.assertTrue(verifyObject(IFailoverPolicy, self.policy))

    def test_addressesOwnFirst(self) -> None:
        """
        The own (odd) addresses of a pool all go before any of the
        partner's (even) ones, which the policy allows.
        """
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::1f"),))
        got = []
        for n in range(16):
            address = self.allocator.addressFor(subnet, clientDuid(n), 1, None, NOW)
            assert address is not None
            self.store.commit([activeLease(address, clientDuid(n))])
            got.append(int(address) % 2)
        self.assertEqual(got, [1] * 8 + [0] * 8)
        self.assertIsNone(self.allocator.addressFor(subnet, clientDuid(16), 1, None, NOW))

    def test_partnersHalfNotRead(self) -> None:
        """
        While an own address is free, the probe reads no candidate of the
        partner's half of the pool; once none is, it reads them for the
        partner's candidate the policy allows.
        """
        read: list[IPv6Address] = []
        get = self.store.get

        def recordingGet(address: IPv6Address, prefix_length: int) -> Lease | None:
            read.append(address)
            return get(address, prefix_length)

        self.store.get = recordingGet  # type: ignore[method-assign]
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::1f"),))
        for n in range(8):
            address = self.allocator.addressFor(subnet, clientDuid(n), 1, None, NOW)
            assert address is not None
            self.store.commit([activeLease(address, clientDuid(n))])
        self.assertTrue(read)
        self.assertEqual([a for a in read if int(a) % 2 == 0], [])
        del read[:]
        address = self.allocator.addressFor(subnet, clientDuid(8), 1, None, NOW)
        assert address is not None
        self.assertEqual(int(address) % 2, 0)
        self.assertIn(address, read)

    def test_ownInAnotherPool(self) -> None:
        """
        An own address in any of the subnet's pools goes before the
        partner's in the pool probed first.
        """
        subnet = makeSubnet(
            pools=(
                addressPool("2001:db8:1::10", "2001:db8:1::10"),
                addressPool("2001:db8:1::21", "2001:db8:1::21"),
            )
        )
        for n in range(4):
            self.assertEqual(
                self.allocator.addressFor(subnet, clientDuid(n), 1, None, NOW),
                IPv6Address("2001:db8:1::21"),
            )

    def test_prefixesOwnFirst(self) -> None:
        """
        FREE-BACKUP prefixes (the secondary's own) go first; then those
        with no record (the primary's), which PARTNER-DOWN allows.
        """
        subnet = makeSubnet(pd_pools=(PrefixPool(IPv6Network("2001:db8:200::/60"), 62),))
        backup = [
            freeBackup("2001:db8:200:4::", 62),
            freeBackup("2001:db8:200:c::", 62),
        ]
        self.store.commit(backup)
        got = []
        for n in range(4):
            key = self.allocator.prefixFor(subnet, clientDuid(n), 1, None, NOW)
            assert key is not None
            self.store.commit([activeLease(key[0], clientDuid(n), prefix_length=key[1])])
            got.append(key)
        self.assertEqual(set(got[:2]), {(lease.address, 62) for lease in backup})
        self.assertEqual(
            set(got[2:]),
            {(IPv6Address("2001:db8:200::"), 62), (IPv6Address("2001:db8:200:8::"), 62)},
        )
        self.assertIsNone(self.allocator.prefixFor(subnet, clientDuid(9), 1, None, NOW))

    def test_partnersHint(self) -> None:
        """
        A hint in the partner's pool gives way to an own candidate; with
        nothing own left, or with no probing (a renewal), it is honoured.
        """
        subnet = makeSubnet(pd_pools=(PrefixPool(IPv6Network("2001:db8:200::/60"), 62),))
        own = freeBackup("2001:db8:200:4::", 62)
        self.store.commit([own])
        hint = (IPv6Address("2001:db8:200::"), 62)
        self.assertEqual(self.allocator.prefixFor(subnet, clientDuid(1), 1, hint, NOW), own.key)
        self.assertEqual(
            self.allocator.prefixFor(subnet, clientDuid(1), 1, hint, NOW, probe=False), hint
        )
        self.store.commit([activeLease(own.address, clientDuid(2), prefix_length=62)])
        self.assertEqual(self.allocator.prefixFor(subnet, clientDuid(1), 1, hint, NOW), hint)

    def test_partnersAddressHint(self) -> None:
        """The same for addresses: an even hint gives way to an odd candidate."""
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::11"),))
        hint = IPv6Address("2001:db8:1::10")
        self.assertEqual(
            self.allocator.addressFor(subnet, clientDuid(1), 1, hint, NOW),
            IPv6Address("2001:db8:1::11"),
        )
        self.assertEqual(
            self.allocator.addressFor(subnet, clientDuid(1), 1, hint, NOW, probe=False), hint
        )

    def test_ownBindingInPartnersPool(self) -> None:
        """
        A client's own binding comes first even in the partner's pool:
        lease stability beats the own-pool preference.
        """
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::1f"),))
        held = IPv6Address("2001:db8:1::12")
        self.store.commit([evolve(activeLease(held, clientDuid(1)), state=BindingState.EXPIRED)])
        self.assertEqual(self.allocator.addressFor(subnet, clientDuid(1), 1, None, NOW), held)

    def test_refusedPartnersNotTaken(self) -> None:
        """
        Outside PARTNER-DOWN the policy refuses the partner's pool: a full
        own pool gives nothing, however many partner's candidates are free.
        """

        @implementer(IFailoverPolicy)
        class Normal(OwnFirstPolicy):
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
                return self.isOwn(lease_type, address, prefix_length, existing)

        allocator = Allocator(self.store, Normal())
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::13"),))
        for n in range(2):
            address = allocator.addressFor(subnet, clientDuid(n), 1, None, NOW)
            assert address is not None
            self.assertEqual(int(address) % 2, 1)
            self.store.commit([activeLease(address, clientDuid(n))])
        self.assertIsNone(allocator.addressFor(subnet, clientDuid(3), 1, None, NOW))

    def test_probeNotLonger(self) -> None:
        """
        Preferring the own pool costs no extra store reads: each candidate
        is read once, and a free own candidate first in the probe ends it.
        """
        subnet = makeSubnet(
            pools=(addressPool("2001:db8:1::", "2001:db8:1:0:ffff:ffff:ffff:ffff"),)
        )
        for n in range(100):
            before = self.store.gets
            address = self.allocator.addressFor(subnet, clientDuid(n), 1, None, NOW)
            assert address is not None
            self.assertEqual(int(address) % 2, 1)
            self.assertLessEqual(self.store.gets - before, MAX_PROBES)

    def test_standaloneNotAsked(self) -> None:
        """A policy that is not a failover one has no pools to prefer: isOwn is never used."""
        self.assertFalse(IFailoverPolicy.providedBy(StandalonePolicy()))
        allocator = Allocator(self.store, EvenOnlyPolicy())
        subnet = makeSubnet(pools=(addressPool("2001:db8:1::10", "2001:db8:1::1f"),))
        self.assertIsNotNone(allocator.addressFor(subnet, clientDuid(1), 1, None, NOW))
        self.assertEqual(self.policy.ownAsked, [])


@implementer(IRenewalPolicy)
class RenewingPolicy(EvenOnlyPolicy):
    """
    Allocates only even addresses (and every prefix), renews whatever it is
    asked to; records the C{mayRenew} calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.renewAsked: list[tuple[IPv6Address, int]] = []
        self.withdrawAsked: list[tuple[IPv6Address, int, Lease | None]] = []

    def mayRenew(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        self.renewAsked.append((address, prefix_length))
        return True

    withdraw = True

    def mayWithdraw(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        self.withdrawAsked.append((address, prefix_length, existing))
        return self.withdraw


class RenewalTests(SynchronousTestCase):
    """
    Renewals (C{probe=False}): the lease the client lists comes before its
    other bindings and is put to L{IRenewalPolicy.mayRenew} when the policy
    provides it.
    """

    def setUp(self) -> None:
        self.store = MemoryLeaseStore()
        self.policy = RenewingPolicy()
        self.allocator = Allocator(self.store, self.policy)
        self.subnet = makeSubnet()

    def test_interface(self) -> None:
        """The test policy provides L{IRenewalPolicy}; the standalone one does not."""
        self.assertTrue(verifyObject(IRenewalPolicy, self.policy))
        self.assertFalse(IRenewalPolicy.providedBy(StandalonePolicy()))

    def test_listedAddress(self) -> None:
        """
        An address the allocation rules refuse but the client lists in a
        renewal: C{mayRenew} decides.  Never asked outside renewals.
        """
        listed = IPv6Address("2001:db8:1::123")
        self.assertEqual(
            self.allocator.addressFor(self.subnet, clientDuid(1), 1, listed, NOW, probe=False),
            listed,
        )
        self.assertEqual(self.policy.renewAsked, [(listed, 128)])
        got = self.allocator.addressFor(self.subnet, clientDuid(1), 1, listed, NOW)
        assert got is not None
        self.assertNotEqual(got, listed)
        self.assertEqual(self.policy.renewAsked, [(listed, 128)])

    def test_unlistedBindingNotRenewed(self) -> None:
        """
        The client's own ended binding that it does not list is put to
        C{mayAllocate}, not C{mayRenew}: the client does not claim it.
        """
        ended = evolve(
            activeLease(IPv6Address("2001:db8:1::123"), clientDuid(1)), state=BindingState.EXPIRED
        )
        self.store.commit([ended])
        self.assertIsNone(
            self.allocator.addressFor(self.subnet, clientDuid(1), 1, None, NOW, probe=False)
        )
        self.assertEqual(self.policy.renewAsked, [])

    def test_listedBeforeOwnBindings(self) -> None:
        """
        Renewal: the listed address wins over the IA's other binding (ours
        may be older than the client's lease); otherwise the binding first.
        """
        older = activeLease(IPv6Address("2001:db8:1::124"), clientDuid(1))
        listed = IPv6Address("2001:db8:1::131")
        for record in (evolve(older, state=BindingState.EXPIRED), older):
            self.store.commit([record])
            self.assertEqual(
                self.allocator.addressFor(self.subnet, clientDuid(1), 1, listed, NOW, probe=False),
                listed,
            )
            self.assertEqual(
                self.allocator.addressFor(self.subnet, clientDuid(1), 1, listed, NOW),
                older.address,
            )

    def test_heldOrReservedNotAsked(self) -> None:
        """Another client's ACTIVE binding or reservation: refused without asking."""
        held = IPv6Address("2001:db8:1::133")
        self.store.commit([activeLease(held, clientDuid(2))])
        reserved = IPv6Address("2001:db8:1::135")
        subnet = makeSubnet(reservations=(Reservation("other", clientDuid(3), (reserved,), ()),))
        for listed in (held, reserved):
            self.assertIsNone(
                self.allocator.addressFor(subnet, clientDuid(1), 1, listed, NOW, probe=False)
            )
        self.assertEqual(self.policy.renewAsked, [])

    def test_listedPrefixExactly(self) -> None:
        """
        A prefix: only the exact listed prefix of a pool's delegated length
        is put to C{mayRenew}; a hint of another length is not a lease held.
        """
        listed = (IPv6Address("2001:db8:100:1200::"), 56)
        self.assertEqual(
            self.allocator.prefixFor(self.subnet, clientDuid(1), 1, listed, NOW, probe=False),
            listed,
        )
        self.assertEqual(self.policy.renewAsked, [listed])
        wider = (IPv6Address("2001:db8:100::"), 48)
        self.assertEqual(
            self.allocator.prefixFor(self.subnet, clientDuid(1), 1, wider, NOW, probe=False),
            (IPv6Address("2001:db8:100::"), 56),
        )
        odd = (IPv6Address("2001:db8:100:1200::"), 200)
        self.allocator.prefixFor(self.subnet, clientDuid(1), 1, odd, NOW, probe=False)
        self.assertEqual(self.policy.renewAsked, [listed])

    def test_standalone(self) -> None:
        """
        Without L{IRenewalPolicy} the listed lease is put to C{mayAllocate},
        still before the IA's other binding.
        """
        allocator = Allocator(self.store, EvenOnlyPolicy())
        older = activeLease(IPv6Address("2001:db8:1::124"), clientDuid(1))
        self.store.commit([older])
        self.assertEqual(
            allocator.addressFor(
                self.subnet, clientDuid(1), 1, IPv6Address("2001:db8:1::126"), NOW, probe=False
            ),
            IPv6Address("2001:db8:1::126"),
        )
        self.assertEqual(
            allocator.addressFor(
                self.subnet, clientDuid(1), 1, IPv6Address("2001:db8:1::127"), NOW, probe=False
            ),
            older.address,
        )


class RefusingRenewalPolicy(RenewingPolicy):
    """Renews nothing it is asked about (records the C{mayRenew} calls); allocates nothing."""

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
        return False

    def mayRenew(
        self,
        lease_type: LeaseType,
        address: IPv6Address,
        prefix_length: int,
        existing: Lease | None,
        duid: bytes,
        iaid: int,
        now: float,
    ) -> bool:
        super().mayRenew(lease_type, address, prefix_length, existing, duid, iaid, now)
        return False


class RenewableTests(SynchronousTestCase):
    """
    L{Allocator.renewable}: a second lease a Renew lists (two servers of a
    pair, cut off from each other, each granted the IA one) is renewed
    beside the first, by the same test as the first.
    """

    def setUp(self) -> None:
        self.store = MemoryLeaseStore()
        self.policy = RenewingPolicy()
        self.allocator = Allocator(self.store, self.policy)
        self.subnet = makeSubnet()
        self.address = IPv6Address("2001:db8:1::123")
        self.prefix = IPv6Address("2001:db8:100:1200::")

    def renewable(self, address: IPv6Address, length: int = 128) -> bool:
        lease_type = LeaseType.NA if length == 128 else LeaseType.PD
        return self.allocator.renewable(
            self.subnet, lease_type, address, length, clientDuid(1), 1, NOW
        )

    def test_ownActive(self) -> None:
        """The IA's own ACTIVE address and prefix: yes, without asking the policy."""
        self.store.commit(
            [
                activeLease(self.address, clientDuid(1)),
                activeLease(self.prefix, clientDuid(1), prefix_length=56),
            ]
        )
        self.assertTrue(self.renewable(self.address))
        self.assertTrue(self.renewable(self.prefix, 56))
        self.assertEqual(self.policy.renewAsked, [])

    def test_noCurrentRecord(self) -> None:
        """
        No record, or an ended one: the policy's C{mayRenew} decides (a
        lease the partner granted while its update was cut off).
        """
        self.store.commit(
            [activeLease(self.prefix, clientDuid(1), prefix_length=56, state=BindingState.EXPIRED)]
        )
        self.assertTrue(self.renewable(self.address))
        self.assertTrue(self.renewable(self.prefix, 56))
        self.assertEqual(self.policy.renewAsked, [(self.address, 128), (self.prefix, 56)])
        policy = RefusingRenewalPolicy()
        self.allocator = Allocator(self.store, policy)
        self.assertFalse(self.renewable(self.address))
        self.assertFalse(self.renewable(self.prefix, 56))
        self.assertEqual(policy.renewAsked, [(self.address, 128), (self.prefix, 56)])

    def test_othersActive(self) -> None:
        """Another IA's or client's ACTIVE binding: no, without asking."""
        for record in (
            activeLease(self.address, clientDuid(2)),
            activeLease(self.address, clientDuid(1), iaid=2),
        ):
            self.store.commit([record])
            self.assertFalse(self.renewable(self.address), record)
        self.assertEqual(self.policy.renewAsked, [])

    def test_declinedByThisIA(self) -> None:
        """
        An ABANDONED binding of this very IA (it declined the lease here):
        the renewal policy decides; another IA's ABANDONED binding: no,
        without asking; and with no renewal policy (a server alone): no.
        """
        self.store.commit([activeLease(self.address, clientDuid(1), state=BindingState.ABANDONED)])
        self.assertTrue(self.renewable(self.address))
        self.assertEqual(self.policy.renewAsked, [(self.address, 128)])
        self.store.commit([activeLease(self.address, clientDuid(2), state=BindingState.ABANDONED)])
        self.assertFalse(self.renewable(self.address))
        self.assertEqual(self.policy.renewAsked, [(self.address, 128)])
        self.store.commit([activeLease(self.address, clientDuid(1), state=BindingState.ABANDONED)])
        self.allocator = Allocator(self.store, StandalonePolicy())
        self.assertFalse(self.renewable(self.address))

    def test_withdrawable(self) -> None:
        """
        A listed lease the IA does not get: lifetime 0 when not appropriate
        on the link (without asking) or with a policy that is not an
        L{IRenewalPolicy}; else the policy's C{mayWithdraw} decides, given
        the stored binding.
        """

        def withdrawable(address: IPv6Address, length: int = 128) -> bool:
            lease_type = LeaseType.NA if length == 128 else LeaseType.PD
            return self.allocator.withdrawable(
                self.subnet, lease_type, address, length, clientDuid(1), 1, NOW
            )

        self.assertTrue(withdrawable(IPv6Address("2001:db8:1::9999")))
        self.assertTrue(withdrawable(self.prefix, 64))
        self.assertEqual(self.policy.withdrawAsked, [])
        record = activeLease(self.address, clientDuid(2), state=BindingState.EXPIRED)
        self.store.commit([record])
        self.policy.withdraw = False
        self.assertFalse(withdrawable(self.address))
        self.assertFalse(withdrawable(self.prefix, 56))
        self.assertEqual(
            self.policy.withdrawAsked, [(self.address, 128, record), (self.prefix, 56, None)]
        )
        self.allocator = Allocator(self.store, StandalonePolicy())
        self.assertTrue(withdrawable(self.address))

    def test_notAppropriate(self) -> None:
        """
        An address outside the pools, a prefix outside the PD pools or of
        another length: no.
        """
        self.assertFalse(self.renewable(IPv6Address("2001:db8:1::9999")))
        self.assertFalse(self.renewable(IPv6Address("2001:db8:ffff::"), 56))
        self.assertFalse(self.renewable(self.prefix, 64))
        self.assertEqual(self.policy.renewAsked, [])

    def test_reservation(self) -> None:
        """A client with a reservation of that kind here keeps only the reserved lease."""
        self.subnet = makeSubnet(
            reservations=(
                Reservation("fixed", clientDuid(1), (IPv6Address("2001:db8:1::10"),), ()),
            )
        )
        self.store.commit(
            [
                activeLease(self.address, clientDuid(1)),
                activeLease(self.prefix, clientDuid(1), prefix_length=56),
            ]
        )
        self.assertFalse(self.renewable(self.address))
        self.assertTrue(self.renewable(self.prefix, 56))
