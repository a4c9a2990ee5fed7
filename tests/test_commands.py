"""
Tests for L{dhcp6ha.failover.commands}: the AMP schemas of the failover protocol.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

import tests.strategies  # noqa: F401  (the deterministic Hypothesis profile)
from dhcp6ha.failover import commands
from dhcp6ha.failover.commands import (
    BINDING_FIELDS,
    BINDING_RESULT_FIELDS,
    BINDING_RESULTS,
    BINDINGS,
    BindingBox,
    BindingUpdate,
    Connect,
    Contact,
    Enum,
    FastAmpList,
    batches,
    bindingFromBox,
    bindingToBox,
)
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType


def _lease(n: int, duid: bytes = b"\x00\x03\x00\x01" + b"\x02" * 6) -> Lease:
    return Lease(
        lease_type=LeaseType.NA,
        address=IPv6Address(int(IPv6Address("2001:db8::")) + n),
        prefix_length=128,
        state=BindingState.ACTIVE,
        duid=duid,
        iaid=n,
        start_time_of_state=1000.5,
        cltt=1001.25,
        preferred_lifetime=300,
        valid_lifetime=600,
        expires=1601.25,
        fqdn="host.example.com" if n % 2 else None,
        fqdn_flags=1 if n % 2 else 0,
    )


def _roundTrip(command: type[amp.Command], **kwargs: object) -> dict[str, object]:
    """Serialize C{kwargs} as C{command}'s arguments and parse them back."""
    strings = command.makeArguments(kwargs, None)
    wire = amp.AmpBox(strings).serialize()
    box = amp.parseString(wire)[0]
    parsed: dict[str, object] = command.parseArguments(box, None)
    return parsed


class BindingWireTests(SynchronousTestCase):
    """Bindings survive the trip through a BindingUpdate box unchanged."""

    def test_roundTrip(self) -> None:
        """
        Every field of a binding, FQDN or not, decodes to an equal L{Lease}
        and the proposed partner lifetime travels with it.
        """
        leases = [_lease(n) for n in range(4)]
        parsed = _roundTrip(
            BindingUpdate, bindings=[bindingToBox(lease, 2000.0) for lease in leases]
        )
        boxes = parsed["bindings"]
        assert isinstance(boxes, list)
        self.assertEqual([bindingFromBox(box) for box in boxes], leases)
        self.assertEqual({box["partner_lifetime"] for box in boxes}, {2000.0})

    def test_prefixBinding(self) -> None:
        """A delegated prefix keeps its type and length."""
        lease = Lease(
            lease_type=LeaseType.PD,
            address=IPv6Address("2001:db8:100:ff00::"),
            prefix_length=56,
            state=BindingState.FREE_BACKUP,
            duid=b"",
            iaid=0,
            start_time_of_state=5.0,
            cltt=0.0,
            preferred_lifetime=0,
            valid_lifetime=0,
            expires=0.0,
        )
        parsed = _roundTrip(BindingUpdate, bindings=[bindingToBox(lease, 0.0)])
        boxes = parsed["bindings"]
        assert isinstance(boxes, list)
        self.assertEqual(bindingFromBox(boxes[0]), lease)


#: Twisted's own AmpList of the same schemas: the reference wire format.
GENERIC_BINDINGS = amp.AmpList(BINDING_FIELDS)
GENERIC_RESULTS = amp.AmpList(BINDING_RESULT_FIELDS)

#: What decoding hostile bytes may raise (the protocol makes it a violation).
DECODE_ERRORS = (KeyError, ValueError, TypeError)


def _results(n: int) -> list[dict[str, Any]]:
    return [
        {
            "address": _lease(i).address,
            "prefix_length": 128,
            "status": 0 if i % 2 else 19,
            "message": None if i % 2 else "outdated: r\u00e9sum\u00e9",
        }
        for i in range(n)
    ]


def _decodes(decode: Any, data: bytes) -> tuple[str, object]:
    """What C{decode(data, None)} gives: C{("ok", values)} or C{("error", None)}."""
    try:
        return ("ok", decode(data, None))
    except DECODE_ERRORS:
        return ("error", None)


class FastAmpListTests(SynchronousTestCase):
    """
    L{FastAmpList} has AmpList's wire format exactly, and turns malformed
    values into exceptions the protocol reports, never into wrong values.
    """

    def test_sameEncoding(self) -> None:
        """Bindings and results encode to the very bytes AmpList makes."""
        boxes = [bindingToBox(_lease(n), 1234.5 + n) for n in range(5)]
        self.assertEqual(
            BINDINGS.toStringProto(boxes, None), GENERIC_BINDINGS.toStringProto(boxes, None)
        )
        results = _results(4)
        self.assertEqual(
            BINDING_RESULTS.toStringProto(results, None),
            GENERIC_RESULTS.toStringProto(results, None),
        )
        self.assertEqual(BINDINGS.toStringProto([], None), b"")

    def test_sameDecoding(self) -> None:
        """What AmpList encodes decodes the same with either."""
        boxes = [bindingToBox(_lease(n), 99.0) for n in range(5)]
        wire = GENERIC_BINDINGS.toStringProto(boxes, None)
        decoded = BINDINGS.fromStringProto(wire, None)
        self.assertEqual(decoded, GENERIC_BINDINGS.fromStringProto(wire, None))
        self.assertEqual([bindingFromBox(box) for box in decoded], [_lease(n) for n in range(5)])
        results = _results(3)
        wire = GENERIC_RESULTS.toStringProto(results, None)
        self.assertEqual(BINDING_RESULTS.fromStringProto(wire, None), results)

    def test_keysInAnyOrder(self) -> None:
        """
        An element whose keys are not sorted (another AMP implementation)
        decodes; a key the schema does not know is ignored.
        """
        wire = (
            b"\x00\x06status\x00\x0216"
            b"\x00\x06future\x00\x03abc"
            b"\x00\x0dprefix_length\x00\x03128"
            b"\x00\x07address\x00\x10" + _lease(1).address.packed + b"\x00\x00"
        )
        self.assertEqual(
            BINDING_RESULTS.fromStringProto(wire, None),
            [{"address": _lease(1).address, "prefix_length": 128, "status": 16, "message": None}],
        )

    def test_duplicateKey(self) -> None:
        """A field given twice keeps its last value, as with AmpList."""
        good = BINDING_RESULTS.toStringProto(_results(1), None)
        twice = good[:-2] + b"\x00\x06status\x00\x0221\x00\x00"
        decoded = BINDING_RESULTS.fromStringProto(twice, None)
        self.assertEqual(decoded[0]["status"], 21)
        self.assertEqual(decoded, GENERIC_RESULTS.fromStringProto(twice, None))

    def test_protocolPassed(self) -> None:
        """An argument that needs the protocol gets it, both ways."""
        seen: list[object] = []

        class Tagged(amp.Integer):
            def toStringProto(self, inObject: int, proto: object) -> bytes:
                seen.append(proto)
                return b"%d" % (inObject,)

            def fromStringProto(self, inString: bytes, proto: object) -> int:
                seen.append(proto)
                return int(inString)

        schema = FastAmpList([(b"n", Tagged()), (b"m", amp.Integer(optional=True))])
        proto = object()
        wire = schema.toStringProto([{"n": 5}], proto)
        self.assertEqual(schema.fromStringProto(wire, proto), [{"n": 5, "m": None}])
        self.assertEqual(schema.fromStringProto(b"\x00\x01x\x00\x00" + wire, proto)[0]["n"], 5)
        self.assertEqual(seen, [proto, proto, proto])

    def test_malformed(self) -> None:
        """
        A missing required field, a value that does not convert, a key
        longer than AMP allows, an element cut short: each raises.
        """
        good = BINDINGS.toStringProto([bindingToBox(_lease(1), 0.0)], None)
        cases = {
            "missing": good.replace(b"\x00\x04iaid", b"\x00\x04xxxx"),
            "bad enum": good.replace(b"\x00\x06active", b"\x00\x06bogus!"),
            "bad integer": good.replace(b"\x00\x03300", b"\x00\x03abc"),
            "long key": b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00",
            "no end": good[:-2],
            "cut key length": good + b"\x00",
            "cut value": good[:40],
            "empty element": b"\x00\x00",
        }
        for name, data in cases.items():
            self.assertRaises(DECODE_ERRORS, BINDINGS.fromStringProto, data, None)
            # AmpList refuses them too, except the cut ones, which it drops
            # silently (its parser waits for more); a long key makes its
            # parser call a transport it does not have (AttributeError).
            if name not in ("no end", "cut key length", "cut value"):
                self.assertRaises(
                    (*DECODE_ERRORS, AttributeError), GENERIC_BINDINGS.fromStringProto, data, None
                )

    def test_encodeErrors(self) -> None:
        """A missing field or a value too long for AMP is refused, as by AmpList."""
        box = bindingToBox(_lease(1), 0.0)
        del box["iaid"]
        self.assertRaises(KeyError, BINDINGS.toStringProto, [box], None)
        long = bindingToBox(evolve(_lease(1), duid=b"x" * 70_000), 0.0)
        self.assertRaises(amp.TooLong, BINDINGS.toStringProto, [long], None)

    @given(st.binary(max_size=200))
    def test_arbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes decode or raise one of L{DECODE_ERRORS}; when they
        decode, AmpList decodes them to the same values.
        """
        outcome, values = _decodes(BINDING_RESULTS.fromStringProto, data)
        if outcome == "ok":
            self.assertEqual(values, GENERIC_RESULTS.fromStringProto(data, None))

    @given(st.data())
    def test_mutatedBindings(self, data: st.DataObject) -> None:
        """
        A valid batch with one byte changed, or cut, decodes or raises one
        of L{DECODE_ERRORS}; when it decodes, AmpList agrees.
        """
        wire = BINDINGS.toStringProto([bindingToBox(_lease(n), 5.0) for n in range(2)], None)
        position = data.draw(st.integers(0, len(wire) - 1))
        if data.draw(st.booleans()):
            mutated = wire[:position]
        else:
            mutated = (
                wire[:position] + bytes([data.draw(st.integers(0, 255))]) + wire[position + 1 :]
            )
        outcome, values = _decodes(BINDINGS.fromStringProto, mutated)
        if outcome == "ok":
            self.assertEqual(values, GENERIC_BINDINGS.fromStringProto(mutated, None))

    def test_fieldNames(self) -> None:
        """Field names AMP could not send are refused when the schema is made."""
        self.assertRaises(ValueError, FastAmpList, [(b"", amp.Integer())])
        self.assertRaises(ValueError, FastAmpList, [(b"k" * 256, amp.Integer())])

    def test_enum(self) -> None:
        """The Enum argument maps members both ways and refuses unknown text."""
        argument = Enum(BindingState)
        self.assertIs(argument.fromString(b"free-backup"), BindingState.FREE_BACKUP)
        self.assertEqual(argument.toString(BindingState.FREE_BACKUP), b"free-backup")
        self.assertRaises(ValueError, argument.fromString, b"happy")
        self.assertRaises(ValueError, argument.fromString, b"\xff")


class EncodedOnceTests(SynchronousTestCase):
    """L{batches} encodes each binding once; the batch is sent with that encoding."""

    def test_carried(self) -> None:
        """
        The batches hold L{BindingBox}es carrying their encoding, which is
        what the BindingUpdate argument is made of.
        """
        boxes = [bindingToBox(_lease(n), 0.0) for n in range(3)]
        (batch,) = list(batches(boxes))
        self.assertEqual(batch, boxes)
        for box in batch:
            assert isinstance(box, BindingBox)
            self.assertEqual(box.encoded, GENERIC_BINDINGS.toStringProto([box], None))
            self.assertIs(box.encodedBy, BINDINGS)
        # The carried encoding is used as it is.
        boxes[0].encoded = b"carried"
        self.assertTrue(BINDINGS.toStringProto(boxes, None).startswith(b"carried"))

    def test_changeDropsEncoding(self) -> None:
        """Changing a box after it was measured drops its encoding."""
        changes = [
            lambda box: box.__setitem__("iaid", 7),
            lambda box: box.update(iaid=7),
            lambda box: box.pop("fqdn"),
            lambda box: box.setdefault("x", 1),
            lambda box: box.__delitem__("fqdn_flags"),
            lambda box: box.__ior__({"iaid": 7}),
            lambda box: box.popitem(),
            lambda box: box.clear(),
        ]
        for change in changes:
            (box,) = next(batches([bindingToBox(_lease(1), 0.0)]))
            assert isinstance(box, BindingBox)
            change(box)
            self.assertIsNone(box.encoded)
            self.assertIsNone(box.encodedBy)

    def test_plainDicts(self) -> None:
        """Plain dicts are measured and sent as equal copies."""
        plain = [dict(bindingToBox(_lease(n), 0.0)) for n in range(2)]
        (batch,) = list(batches(plain))
        self.assertEqual(batch, plain)
        self.assertTrue(all(type(box) is BindingBox for box in batch))
        self.assertEqual(
            commands._encodedSize(plain[0]),
            len(GENERIC_BINDINGS.toStringProto([plain[0]], None)),
        )

    @given(
        st.builds(
            Lease,
            lease_type=st.sampled_from(list(LeaseType)),
            address=tests.strategies.ipv6Addresses(),
            prefix_length=st.integers(0, 128),
            state=st.sampled_from(list(BindingState)),
            duid=st.binary(max_size=200),
            iaid=st.integers(0, 2**32 - 1),
            start_time_of_state=st.floats(),
            cltt=st.floats(),
            preferred_lifetime=st.integers(0, 2**32 - 1),
            valid_lifetime=st.integers(0, 2**32 - 1),
            expires=st.floats(),
            fqdn=st.none() | st.text(max_size=40),
            fqdn_flags=st.integers(0, 255),
        ),
        st.floats(),
    )
    def test_encodeBindingIsAmpList(self, lease: Lease, partnerLifetime: float) -> None:
        """
        L{encodeBinding} makes exactly what AMP's own AmpList makes of the
        binding's box.
        """
        box = bindingToBox(lease, partnerLifetime)
        self.assertEqual(box.encoded, commands.encodeBinding(lease, partnerLifetime))
        self.assertEqual(box.encoded, GENERIC_BINDINGS.toStringProto([dict(box)], None))

    def test_encodeBindingRefuses(self) -> None:
        """
        A time that is not a float, or a DUID too long for AMP, is refused
        as AMP would; its box carries no encoding.
        """
        for lease, error in [
            (evolve(_lease(1), cltt=5), ValueError),
            (evolve(_lease(1), duid=b"x" * 0x10000), amp.TooLong),
        ]:
            with self.assertRaises(error):
                commands.encodeBinding(lease, 0.0)
            box = bindingToBox(lease, 0.0)
            self.assertIsNone(box.encoded)
            self.assertRaises(error, BINDINGS.toStringProto, [box], None)

    def test_otherList(self) -> None:
        """An encoding made for another schema is not used."""
        box = bindingToBox(_lease(1), 0.0)
        box.encoded = b"other"
        box.encodedBy = FastAmpList(BINDING_FIELDS)
        self.assertEqual(
            BINDINGS.toStringProto([box], None), GENERIC_BINDINGS.toStringProto([box], None)
        )


class BatchTests(SynchronousTestCase):
    """L{batches} keeps every AmpList value under AMP's 64 KiB limit."""

    def test_underLimit(self) -> None:
        """
        Thousands of bindings with the longest DUIDs (130 bytes) are cut into
        batches whose serialized value fits in one AMP value, losing none.
        """
        leases = [_lease(n, duid=bytes([n % 256]) * 130) for n in range(3000)]
        cut = list(batches(bindingToBox(lease, 0.0) for lease in leases))
        self.assertGreater(len(cut), 1)
        self.assertEqual(sum(len(batch) for batch in cut), len(leases))
        for batch in cut:
            strings = BindingUpdate.makeArguments({"bindings": batch}, None)
            self.assertLess(len(strings[b"bindings"]), 0xFFFF)
            # serializing the box raises TooLong if any value is too big
            amp.AmpBox(strings).serialize()

    def test_empty(self) -> None:
        """No bindings, no batches."""
        self.assertEqual(list(batches([])), [])


class ExtensibilityTests(SynchronousTestCase):
    """RFC 7031 requirement 10: unknown optional arguments are ignored."""

    def test_unknownArgumentIgnored(self) -> None:
        """
        A Contact box from a newer partner carrying an argument this version
        does not know parses, and the unknown key is dropped.
        """
        strings = Contact.makeArguments({"sender_time": 12.5}, None)
        strings[b"future_extension"] = b"whatever"
        box = amp.parseString(amp.AmpBox(strings).serialize())[0]
        parsed = Contact.parseArguments(box, None)
        self.assertEqual(parsed, {"sender_time": 12.5, "clients_seen": None})

    def test_connectFields(self) -> None:
        """Connect carries version, relationship, role, MCLT and the sender's time."""
        parsed = _roundTrip(
            Connect,
            protocol_version=1,
            relationship="lan",
            role="primary",
            mclt=3600,
            sender_time=1.5,
            max_unacked=100,
            keepalive=10.0,
        )
        self.assertEqual(parsed["relationship"], "lan")
        self.assertEqual(parsed["mclt"], 3600)


class SchemaTypesTests(SynchronousTestCase):
    """
    The schemas are made of AMP's own argument classes (called through typed
    views for mypy): L{FastAmpList} encodes an exact C{amp.Integer} without
    calling it, so a subclass there would change nothing but speed, and an
    optional flag lost would change the wire.
    """

    def test_exactClasses(self) -> None:
        """Each schema argument is an instance of exactly the AMP class named."""
        connect = dict(Connect.arguments)
        self.assertIs(type(connect[b"mclt"]), amp.Integer)
        self.assertIs(type(connect[b"relationship"]), amp.Unicode)
        self.assertIs(type(connect[b"sender_time"]), amp.Float)
        self.assertIs(type(connect[b"server_duid"]), amp.String)
        self.assertIs(type(dict(commands.State.arguments)[b"startup"]), amp.Boolean)
        fields = dict(BINDING_FIELDS)
        self.assertIs(type(fields[b"iaid"]), amp.Integer)
        self.assertIs(type(fields[b"address"]), commands.Address)

    def test_optional(self) -> None:
        """C{optional=True} reaches the argument; the default is required."""
        connect = dict(Connect.arguments)
        self.assertFalse(connect[b"mclt"].optional)
        self.assertTrue(connect[b"server_duid"].optional)
        self.assertFalse(commands.Address().optional)
        self.assertTrue(commands.Address(optional=True).optional)
        self.assertTrue(Enum(LeaseType, optional=True).optional)
        self.assertEqual(
            [name for name, argument in BINDING_FIELDS if argument.optional],
            [b"fqdn", b"fqdn_flags"],
        )
