"""
Tests for L{dhcp6ha.chaos.history}: the events of a run and their JSON-lines
form.
"""

from __future__ import annotations

import io
import json
from ipaddress import IPv6Address
from typing import cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.chaos.history import (
    FAULT_KILL,
    NA,
    PD,
    TA,
    BindingRecord,
    ClientReceived,
    ClientSent,
    DatabaseDump,
    Event,
    FaultEvent,
    HistoryFormatError,
    HistoryRecorder,
    IAEntry,
    LeaseEntry,
    Note,
    RunHeader,
    ServerInfo,
    ServerStateObserved,
    bindingRecord,
    dumpEvent,
    dumps,
    eventTime,
    loads,
    messageTypeName,
    parseEvent,
    readHistory,
    receivedEvent,
    sentEvent,
    sortedByTime,
    writeHistory,
)
from dhcp6ha.leases.lease import BindingState, Lease, LeaseType
from dhcp6ha.message import (
    IANA,
    IAPD,
    IATA,
    ClientId,
    ElapsedTime,
    IAAddress,
    IAPrefix,
    Message,
    MessageType,
    RapidCommit,
    ServerId,
    StatusCodeOption,
)
from tests.strategies import duids, ipv6Addresses, messages

CLIENT = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x01"
SERVER = b"\x00\x02\x00\x00\x00\x09primary"
ADDRESS = IPv6Address("2001:db8:1::105")
PREFIX = IPv6Address("2001:db8:100:200::")


def allEvents() -> list[Event]:
    """One event of every kind, with every optional field set somewhere."""
    lease = LeaseEntry(ADDRESS, 128, 30, 60)
    prefix = LeaseEntry(PREFIX, 56, 40, 80, status=0)
    return [
        RunHeader(
            seed=1234,
            started=1_700_000_000.25,
            mclt=30.0,
            max_valid_lifetime=120,
            servers=(
                ServerInfo("primary", SERVER, "[2001:db8::1]:547"),
                ServerInfo("secondary", b"\x00\x02second"),
            ),
            fresh_databases=False,
            auto_partner_down=True,
            parameters=(("clients", "100"), ("duration", "60")),
            command=("python", "-m", "dhcp6ha.chaos", "--seed", "1234"),
        ),
        ClientSent(
            1_700_000_001.0,
            CLIENT,
            "REQUEST",
            0xABCDEF,
            attempt=2,
            server=SERVER,
            ias=(IAEntry(NA, 1, 0, 0, None, (lease,)), IAEntry(PD, 2)),
            rapid_commit=True,
            destination="[2001:db8::1]:547",
        ),
        ClientReceived(
            1_700_000_001.5,
            CLIENT,
            "REPLY",
            0xABCDEF,
            SERVER,
            status=0,
            ias=(
                IAEntry(NA, 1, 15, 24, None, (lease,)),
                IAEntry(PD, 2, 20, 32, None, (prefix,)),
                IAEntry(TA, 3, status=2),
            ),
            rapid_commit=True,
            accepted=False,
            source="[2001:db8::1]:547",
        ),
        ClientReceived(1_700_000_002.0, CLIENT, "ADVERTISE", 7, None),
        FaultEvent(FAULT_KILL, "primary", 1_700_000_003.0, 1_700_000_013.5, "SIGKILL"),
        FaultEvent("partition", "primary/secondary", 1_700_000_004.0),
        ServerStateObserved(1_700_000_005.0, SERVER, "communications-interrupted"),
        DatabaseDump(
            1_700_000_100.0,
            SERVER,
            (
                BindingRecord(
                    NA, ADDRESS, 128, "active", CLIENT, 1, 1_700_000_061.0, 1_700_000_001.0, 0.0
                ),
                BindingRecord(PD, PREFIX, 56, "free", b"", 0, 0.0, 0.0, None),
            ),
            "primary",
        ),
        Note(1_700_000_101.0, "healed; both NORMAL"),
    ]


class EventTests(SynchronousTestCase):
    """The event values themselves."""

    def test_eventTime(self) -> None:
        """A header's time is its start, a fault's its start, others their time."""
        events = allEvents()
        self.assertEqual(
            [eventTime(e) for e in events],
            [
                1_700_000_000.25,
                1_700_000_001.0,
                1_700_000_001.5,
                1_700_000_002.0,
                1_700_000_003.0,
                1_700_000_004.0,
                1_700_000_005.0,
                1_700_000_100.0,
                1_700_000_101.0,
            ],
        )

    def test_sortedByTime(self) -> None:
        """Sorting is by time and stable."""
        a = Note(2.0, "a")
        b = Note(1.0, "b")
        c = Note(2.0, "c")
        self.assertEqual(sortedByTime([a, b, c]), [b, a, c])

    def test_serverNamed(self) -> None:
        """A header finds a server by name or by its DUID in hex."""
        header = allEvents()[0]
        assert isinstance(header, RunHeader)
        self.assertEqual(header.serverNamed("primary"), header.servers[0])
        self.assertEqual(header.serverNamed(SERVER.hex()), header.servers[0])
        self.assertIsNone(header.serverNamed("tertiary"))

    def test_keys(self) -> None:
        """Lease entries and binding records key leases like the stores."""
        self.assertEqual(LeaseEntry(PREFIX, 56, 1, 2).key, (PREFIX, 56))
        record = BindingRecord(NA, ADDRESS, 128, "active", CLIENT, 1, 0.0, 0.0)
        self.assertEqual(record.key, (ADDRESS, 128))

    def test_messageTypeName(self) -> None:
        """Known types by name, others by number."""
        self.assertEqual(messageTypeName(MessageType.REBIND), "REBIND")
        self.assertEqual(messageTypeName(7), "REPLY")
        self.assertEqual(messageTypeName(99), "99")


class FromMessageTests(SynchronousTestCase):
    """Events built from decoded messages and store bindings."""

    def test_sent(self) -> None:
        """A client message: client, server, IAs with what the client listed, rapid commit."""
        message = Message(
            MessageType.SOLICIT,
            0x010203,
            (
                ClientId(CLIENT),
                ElapsedTime(0),
                RapidCommit(),
                IANA(7, 0, 0, (IAAddress(ADDRESS, 0, 0),)),
                IAPD(8, 0, 0, (IAPrefix(0, 0, 56, PREFIX),)),
                IATA(9),
            ),
        )
        event = sentEvent(12.5, message, attempt=1, destination="there")
        self.assertEqual(
            event,
            ClientSent(
                12.5,
                CLIENT,
                "SOLICIT",
                0x010203,
                1,
                None,
                (
                    IAEntry(NA, 7, 0, 0, None, (LeaseEntry(ADDRESS, 128, 0, 0),)),
                    IAEntry(PD, 8, 0, 0, None, (LeaseEntry(PREFIX, 56, 0, 0),)),
                    IAEntry(TA, 9),
                ),
                True,
                "there",
            ),
        )

    def test_received(self) -> None:
        """A Reply: server, top-level status, IA and lease status codes, lifetimes."""
        message = Message(
            MessageType.REPLY,
            5,
            (
                ClientId(CLIENT),
                ServerId(SERVER),
                StatusCodeOption(0, "ok"),
                IANA(
                    1,
                    10,
                    16,
                    (IAAddress(ADDRESS, 20, 30, (StatusCodeOption(0),)),),
                ),
                IAPD(2, 0, 0, (StatusCodeOption(6, "none"),)),
            ),
        )
        event = receivedEvent(3.0, message, accepted=False, source="s")
        self.assertEqual(
            event,
            ClientReceived(
                3.0,
                CLIENT,
                "REPLY",
                5,
                SERVER,
                0,
                (
                    IAEntry(NA, 1, 10, 16, None, (LeaseEntry(ADDRESS, 128, 20, 30, 0),)),
                    IAEntry(PD, 2, 0, 0, 6, ()),
                ),
                False,
                False,
                "s",
            ),
        )

    def test_noClientId(self) -> None:
        """A message without a Client Identifier cannot be attributed."""
        message = Message(MessageType.REPLY, 1, (ServerId(SERVER),))
        self.assertRaises(ValueError, sentEvent, 0.0, message)
        self.assertRaises(ValueError, receivedEvent, 0.0, message)

    def test_bindingRecord(self) -> None:
        """A store's Lease keeps the fields the checker reads."""
        lease = Lease(
            lease_type=LeaseType.PD,
            address=PREFIX,
            prefix_length=56,
            state=BindingState.ACTIVE,
            duid=CLIENT,
            iaid=4,
            start_time_of_state=1.0,
            cltt=2.0,
            preferred_lifetime=10,
            valid_lifetime=20,
            expires=22.0,
            partner_lifetime_acked=40.0,
        )
        self.assertEqual(
            bindingRecord(lease),
            BindingRecord(PD, PREFIX, 56, "active", CLIENT, 4, 22.0, 2.0, 40.0),
        )


class JSONLinesTests(SynchronousTestCase):
    """The JSON-lines form."""

    def test_roundTrip(self) -> None:
        """Every kind of event reads back equal."""
        events = allEvents()
        text = dumps(events)
        self.assertEqual(len(text.splitlines()), len(events))
        self.assertEqual(loads(text), events)

    def test_fileRoundTrip(self) -> None:
        """writeHistory and readHistory agree; blank lines are skipped."""
        out = io.StringIO()
        writeHistory(allEvents(), out)
        lines = out.getvalue().splitlines(keepends=True)
        lines.insert(2, "\n")
        self.assertEqual(readHistory(lines), allEvents())

    def test_oneObjectPerLine(self) -> None:
        """A line is a JSON object with a type tag, bytes as hex, addresses as text."""
        sent = allEvents()[1]
        obj = json.loads(dumpEvent(sent))
        self.assertEqual(obj["type"], "sent")
        self.assertEqual(obj["client"], CLIENT.hex())
        self.assertEqual(obj["ias"][0]["leases"][0]["address"], str(ADDRESS))
        self.assertNotIn("\n", dumpEvent(sent))

    def test_defaultsMayBeOmitted(self) -> None:
        """Keys of fields with defaults may be left out."""
        self.assertEqual(
            parseEvent('{"type":"note","time":1,"text":"x"}'),
            Note(1.0, "x"),
        )
        self.assertEqual(
            parseEvent('{"type":"fault","kind":"kill","target":"primary","start":2}'),
            FaultEvent("kill", "primary", 2.0),
        )

    def test_notAnEvent(self) -> None:
        """Only events can be written."""
        self.assertRaises(TypeError, dumpEvent, cast(Event, LeaseEntry(ADDRESS, 128, 0, 0)))

    def assertRefused(self, text: str, *fragments: str) -> None:
        with self.assertRaises(HistoryFormatError) as caught:
            readHistory(["", text])
        message = str(caught.exception)
        self.assertIn("line 2", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_refused(self) -> None:
        """Every kind of bad line is refused with a reason and its line number."""
        note = '{"type":"note","time":1,"text":"x"}'
        self.assertRefused("{", "not JSON")
        self.assertRefused("[1]", "not a JSON object")
        self.assertRefused('{"type":"nope"}', "unknown event type")
        self.assertRefused('{"time":1}', "unknown event type")
        self.assertRefused(note[:-1] + ',"extra":1}', "unknown keys", "extra")
        self.assertRefused('{"type":"note","time":1}', "missing key", "text")
        self.assertRefused('{"type":"note","time":"1","text":"x"}', "expected a number")
        self.assertRefused('{"type":"note","time":true,"text":"x"}', "expected a number")
        self.assertRefused('{"type":"note","time":1,"text":2}', "expected text")
        self.assertRefused('{"type":"state","time":1,"server":"zz","state":"normal"}', "not hex")
        self.assertRefused('{"type":"state","time":1,"server":5,"state":"normal"}', "hex text")
        self.assertRefused(
            '{"type":"sent","time":1,"client":"00","msg_type":"RENEW","xid":1.5}',
            "expected an integer",
        )
        self.assertRefused(
            '{"type":"sent","time":1,"client":"00","msg_type":"RENEW","xid":1,"rapid_commit":1}',
            "true or false",
        )
        self.assertRefused(
            '{"type":"sent","time":1,"client":"00","msg_type":"RENEW","xid":1,"ias":{}}',
            "expected a list",
        )
        self.assertRefused(
            '{"type":"sent","time":1,"client":"00","msg_type":"RENEW","xid":1,"ias":[1]}',
            "expected an object",
        )
        self.assertRefused(
            '{"type":"sent","time":1,"client":"00","msg_type":"RENEW","xid":1,'
            '"ias":[{"kind":"na","iaid":1,"leases":[{"address":"1.2.3.4",'
            '"prefix_length":128,"preferred":0,"valid":0}]}]}',
            "not an IPv6 address",
        )
        self.assertRefused(
            '{"type":"sent","time":1,"client":"00","msg_type":"RENEW","xid":1,'
            '"ias":[{"kind":"na","iaid":1,"leases":[{"address":5,'
            '"prefix_length":128,"preferred":0,"valid":0}]}]}',
            "expected an IPv6 address",
        )
        self.assertRefused(
            '{"type":"header","seed":1,"started":0,"parameters":[["a"]]}',
            "expected 2 items",
        )

    @given(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(0, 0xFFFFFF),
        duids(),
        ipv6Addresses(),
        st.integers(0, 128),
        st.integers(0, 0xFFFFFFFF),
        st.text(),
    )
    def test_roundTripProperty(
        self,
        time: float,
        xid: int,
        duid: bytes,
        address: IPv6Address,
        length: int,
        lifetime: int,
        text: str,
    ) -> None:
        """Arbitrary field values read back equal."""
        entry = LeaseEntry(address, length, lifetime, lifetime, xid)
        events: list[Event] = [
            ClientReceived(time, duid, text, xid, duid, None, (IAEntry(PD, xid, leases=(entry,)),)),
            Note(time, text),
        ]
        self.assertEqual(loads(dumps(events)), events)

    @given(messages())
    def test_messagesRoundTrip(self, message: Message) -> None:
        """The events of any message with a Client Identifier read back equal."""
        if not any(isinstance(o, ClientId) for o in message.options):
            self.assertRaises(ValueError, sentEvent, 1.0, message)
            return
        events: list[Event] = [sentEvent(1.0, message), receivedEvent(2.0, message)]
        self.assertEqual(loads(dumps(events)), events)


class RecorderTests(SynchronousTestCase):
    """L{HistoryRecorder}."""

    def test_records(self) -> None:
        """Events are kept in order and written as they come; time is the clock's."""
        clock = Clock()
        clock.advance(42.5)
        out = io.StringIO()
        recorder = HistoryRecorder(clock, out)
        self.assertEqual(recorder.now(), 42.5)
        first = Note(recorder.now(), "one")
        second = FaultEvent(FAULT_KILL, "primary", 43.0)
        recorder.record(first)
        recorder.record(second)
        recorder.flush()
        self.assertEqual(recorder.events, [first, second])
        self.assertEqual(loads(out.getvalue()), [first, second])
        self.assertEqual(recorder.ofType(FaultEvent), [second])

    def test_memoryOnly(self) -> None:
        """Without a file, events are only kept."""
        recorder = HistoryRecorder(Clock())
        recorder.record(Note(0.0, "x"))
        recorder.flush()
        self.assertEqual(recorder.events, [Note(0.0, "x")])
