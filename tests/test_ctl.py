"""
Tests for L{dhcp6ha.ctl}, the C{dhcp6ha-ctl} command line: its formatting
functions, its usage and connection errors, and end to end against a real
control socket in a temporary directory (the CLI's blocking calls run in a
thread while the reactor serves).
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import socket
import tempfile
import threading
from typing import Any

from attrs import evolve
from twisted.internet import reactor as globalReactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dhcp6ha.config import parseConfigText
from dhcp6ha.control import ControlError, ControlService
from dhcp6ha.ctl import (
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_USAGE,
    ServerError,
    formatDuration,
    formatLeases,
    formatStatus,
    main,
    request,
)
from dhcp6ha.leases.lease import BindingState
from dhcp6ha.service import makeService
from tests.test_control import (
    CLIENT,
    NOW,
    FakeRelationship,
    filledStore,
    lease,
    makeTarget,
)

STANDALONE: dict[str, Any] = {
    "version": "0.1.0",
    "now": NOW,
    "server": {
        "duid": "00:02:00:00:7e:d9:01:02:03:04",
        "duid_description": "DUID-EN 32473 01020304",
        "started": NOW - 192,
        "uptime": 192.0,
        "address": "::1",
        "port": 5547,
        "interfaces": [],
        "serving": True,
        "config": "etc/dhcp6ha.ini",
        "database": "var/dhcp6ha.sqlite",
    },
    "datagrams": {"received": 10, "sent": 7, "dropped": 3},
    "counters": {"received": 10},
    "leases": {"expired": 1, "active": 5},
    "relationships": [],
    "control": {},
}


def relationship(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": "lab-pair",
        "role": "primary",
        "state": "communications-interrupted",
        "state_since": NOW - 192,
        "partner_state": "normal",
        "partner_state_since": NOW - 7200,
        "unacked_updates": 12,
        "last_contact": NOW - 193,
        "clock_skew": -0.25,
        "connected": False,
        "service": "responsive",
    }
    entry.update(changes)
    return entry


class FormatTests(SynchronousTestCase):
    """
    The human-readable output.
    """

    def test_duration(self) -> None:
        """Durations: seconds, minutes, hours, days; negative as 0."""
        self.assertEqual(
            [formatDuration(s) for s in (0, 59.9, 60, 192, 3599, 3600, 10980, 86400, 183600, -5)],
            ["0s", "59s", "1m00s", "3m12s", "59m59s", "1h00m", "3h03m", "1d00h", "2d03h", "0s"],
        )

    def test_statusStandalone(self) -> None:
        """A standalone server: the summary and a line saying it runs alone."""
        self.assertEqual(
            formatStatus(STANDALONE),
            "dhcp6ha 0.1.0, server DUID 00:02:00:00:7e:d9:01:02:03:04"
            " (DUID-EN 32473 01020304)\n"
            "  listening  [::1]:5547, relayed clients only\n"
            "  serving    yes\n"
            "  up         3m12s (since 2026-09-21 14:10:08 UTC)\n"
            "  config     etc/dhcp6ha.ini (database var/dhcp6ha.sqlite)\n"
            "  datagrams  received 10, sent 7, dropped 3\n"
            "  leases     active 5, expired 1 (6 in all)\n"
            "\n"
            "No failover relationship: this server runs alone.\n",
        )

    def test_statusResponseTime(self) -> None:
        """Once replies were sent: how many, and how long after the request they left."""
        status = dict(
            STANDALONE,
            response_time={
                "count": 7,
                "mean": 0.004,
                "p50": 0.00123,
                "p90": 0.0091,
                "p99": 0.0456,
                "max": 1.5,
            },
        )
        self.assertIn(
            "  replies    7 sent, 1.23 ms median, 46 ms p99, 1,500 ms max after"
            " reading the request\n",
            formatStatus(status),
        )
        none = dict(STANDALONE, response_time={"count": 0})
        self.assertNotIn("replies", formatStatus(none))

    def test_statusQueueWait(self) -> None:
        """Once datagrams were read: how long they waited in the socket buffer."""
        status = dict(
            STANDALONE,
            queue_wait={
                "count": 12,
                "mean": 0.0001,
                "p50": 0.00006,
                "p90": 0.0002,
                "p99": 0.0151,
                "max": 0.2,
            },
        )
        self.assertIn(
            "  queued     12 read, 0.06 ms median, 15 ms p99, 200 ms max waiting in the"
            " socket buffer\n",
            formatStatus(status),
        )
        none = dict(STANDALONE, queue_wait={"count": 0})
        self.assertNotIn("queued", formatStatus(none))

    def test_statusRelationships(self) -> None:
        """
        One row per relationship: own state and for how long, the partner's,
        unacked updates, the replication lag's median and 99th percentile
        (C{-} before any ack), last contact, clock skew.
        """
        status = dict(
            STANDALONE,
            relationships=[
                relationship(),
                relationship(
                    name="b",
                    role="secondary",
                    state="normal",
                    connected=True,
                    last_contact=NOW - 2,
                    clock_skew=None,
                    unacked_updates=0,
                    replication={
                        "sent": 40,
                        "acked": 40,
                        "lag": {
                            "count": 40,
                            "mean": 0.011,
                            "p50": 0.0099,
                            "p90": 0.018,
                            "p99": 0.0235,
                            "max": 0.03,
                        },
                    },
                ),
                relationship(name="c", replication={"lag": {"count": 0}}),
            ],
        )
        lines = formatStatus(status).splitlines()
        table = lines[lines.index("") + 1 :]
        self.assertEqual(
            table,
            [
                "RELATIONSHIP  ROLE       STATE                       SINCE      PARTNER"
                "                 SINCE      UNACKED  LAG P50/P99  CONTACT    SKEW",
                "lab-pair      primary    COMMUNICATIONS-INTERRUPTED  for 3m12s  NORMAL"
                " (not connected)  for 2h00m  12       -            3m13s ago  -0.2s",
                "b             secondary  NORMAL                      for 3m12s  NORMAL"
                "                  for 2h00m  0        9.90/24 ms   2s ago     -",
                "c             primary    COMMUNICATIONS-INTERRUPTED  for 3m12s  NORMAL"
                " (not connected)  for 2h00m  12       -            3m13s ago  -0.2s",
            ],
        )

    def test_statusUnknowns(self) -> None:
        """Not started, no lease count, a relationship in error, unknown partner."""
        status = dict(
            STANDALONE,
            server=dict(STANDALONE["server"], duid=None, started=None, serving=False),
            leases=None,
            leases_error="the lease database is not open",
            relationships=[
                {"name": "x", "error": "status failed: boom"},
                relationship(
                    partner_state=None,
                    partner_state_since=None,
                    last_contact=None,
                    clock_skew=None,
                ),
            ],
        )
        text = formatStatus(status)
        self.assertIn("dhcp6ha 0.1.0, not started\n", text)
        self.assertIn("  serving    NO\n", text)
        self.assertNotIn("  up ", text)
        self.assertIn("  leases     unknown: the lease database is not open\n", text)
        self.assertIn("relationship x: status failed: boom\n", text)
        self.assertIn("- (not connected)  -      12       -            never    -\n", text)

    def test_statusInterfaces(self) -> None:
        """Interfaces of directly attached clients are listed; no lease at all says so."""
        status = dict(
            STANDALONE,
            server=dict(STANDALONE["server"], address="::", interfaces=["eth0", "eth1"]),
            leases={},
        )
        text = formatStatus(status)
        self.assertIn("  listening  [::]:5547, and ff02::1:2 on eth0, eth1\n", text)
        self.assertIn("  leases     none\n", text)

    def test_leases(self) -> None:
        """One row per binding; prefixes with their length; expiry relative."""
        result = {
            "now": NOW,
            "truncated": False,
            "leases": [
                {
                    "lease_type": "na",
                    "address": "2001:db8:1::1000",
                    "prefix_length": 128,
                    "prefix": "2001:db8:1::1000/128",
                    "state": "active",
                    "duid": "00:03:00:01:02:00:00:00:00:09",
                    "iaid": 1,
                    "expires": NOW + 500,
                },
                {
                    "lease_type": "pd",
                    "address": "2001:db8:100::",
                    "prefix_length": 56,
                    "prefix": "2001:db8:100::/56",
                    "state": "expired",
                    "duid": "00:03:00:01:02:00:00:00:00:09",
                    "iaid": 7,
                    "expires": NOW - 65,
                },
            ],
        }
        self.assertEqual(
            formatLeases(result),
            "ADDRESS/PREFIX     TYPE  STATE    DUID                           IAID  EXPIRES\n"
            "2001:db8:1::1000   na    active   00:03:00:01:02:00:00:00:00:09  1     in 8m20s\n"
            "2001:db8:100::/56  pd    expired  00:03:00:01:02:00:00:00:00:09  7     1m05s ago\n"
            "2 leases\n",
        )

    def test_leasesTruncatedOrNone(self) -> None:
        """A truncated list says so; an empty one too."""
        self.assertEqual(formatLeases({"now": NOW, "leases": []}), "No lease found.\n")
        one = {
            "lease_type": "na",
            "address": "2001:db8:1::1",
            "prefix_length": 128,
            "state": "free",
            "duid": "",
            "iaid": 0,
            "expires": NOW,
        }
        text = formatLeases({"now": NOW, "leases": [one], "truncated": True})
        self.assertIn("2001:db8:1::1   na    free   -     -     -\n", text)
        self.assertTrue(text.endswith("(the first 1 shown; more match: use --limit to see more)\n"))
        self.assertTrue(formatLeases({"now": NOW, "leases": [one]}).endswith("\n1 lease\n"))

    def test_leasesWithoutClient(self) -> None:
        """
        FREE-BACKUP and FREE bindings (expiry 0, no client) show "-" for
        DUID, IAID and expiry, not an expiry decades ago; the states a plain
        listing left out are named.
        """
        backup = {
            "lease_type": "pd",
            "address": "2001:db8:100:ff00::",
            "prefix_length": 56,
            "prefix": "2001:db8:100:ff00::/56",
            "state": "free-backup",
            "duid": "",
            "iaid": 0,
            "expires": 0.0,
        }
        active = {
            "lease_type": "na",
            "address": "2001:db8:1::1000",
            "prefix_length": 128,
            "prefix": "2001:db8:1::1000/128",
            "state": "active",
            "duid": "00:03:00:01:02:00:00:00:00:09",
            "iaid": 1,
            "expires": NOW + 500,
        }
        text = formatLeases({"now": NOW, "leases": [backup, active]})
        self.assertEqual(
            text,
            "ADDRESS/PREFIX          TYPE  STATE        DUID                           IAID"
            "  EXPIRES\n"
            "2001:db8:100:ff00::/56  pd    free-backup  -                              -     -\n"
            "2001:db8:1::1000        na    active       00:03:00:01:02:00:00:00:00:09  1    "
            " in 8m20s\n"
            "2 leases\n",
        )
        self.assertNotIn("ago", text)
        hidden = formatLeases({"now": NOW, "leases": [active]}, ("free", "free-backup"))
        self.assertTrue(
            hidden.endswith(
                "1 lease\n(free and free-backup bindings, without a client, not shown:"
                " --state all shows every binding)\n"
            ),
            hidden,
        )
        self.assertEqual(
            formatLeases({"now": NOW, "leases": []}, ("free",)),
            "No lease found.\n(free bindings, without a client, not shown:"
            " --state all shows every binding)\n",
        )


class Output:
    """Captured standard streams for L{main}."""

    def __init__(self, stdin: str = "") -> None:
        self.stdin = io.StringIO(stdin)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()

    def run(self, *argv: str) -> int:
        return main(list(argv), self.stdin, self.stdout, self.stderr)

    @property
    def out(self) -> str:
        return self.stdout.getvalue()

    @property
    def err(self) -> str:
        return self.stderr.getvalue()


class UsageTests(SynchronousTestCase):
    """
    Usage errors and unreachable servers: exit status 2, a clear message,
    nothing sent.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "s.ctl")

    def config(self, extra: str) -> str:
        path = os.path.join(self.directory, "server.ini")
        with open(path, "w") as f:
            f.write(
                f"[server]\ndatabase = x.sqlite\n{extra}\n[subnet:lab]\nprefix = 2001:db8:1::/64\n"
            )
        return path

    def test_noSocket(self) -> None:
        """Neither --socket nor --config."""
        output = Output()
        self.assertEqual(output.run("status"), EXIT_USAGE)
        self.assertIn("give the control socket: --socket PATH, or --config FILE", output.err)

    def test_bothSocketAndConfig(self) -> None:
        """--socket and --config together."""
        output = Output()
        self.assertEqual(output.run("--socket", "a", "--config", "b", "status"), EXIT_USAGE)
        self.assertIn("not allowed with argument", output.err)

    def test_noCommand(self) -> None:
        """A command is required; unknown ones are refused."""
        output = Output()
        self.assertEqual(output.run("--socket", self.path), EXIT_USAGE)
        self.assertIn("usage: dhcp6ha-ctl", output.err)
        self.assertEqual(output.run("--socket", self.path, "restart"), EXIT_USAGE)
        self.assertIn("invalid choice: 'restart'", output.err)

    def test_help(self) -> None:
        """--help goes to standard output, status 0; partner-down's help warns."""
        output = Output()
        self.assertEqual(output.run("--help"), EXIT_OK)
        self.assertIn("Exit status: 0 done; 1", output.out)
        output = Output()
        self.assertEqual(output.run("partner-down", "--help"), EXIT_OK)
        self.assertIn("Do this ONLY when the partner is really down", output.out)

    def test_leasesOneFilter(self) -> None:
        """At most one of --address, --prefix, --duid."""
        output = Output()
        code = output.run("-s", self.path, "leases", "--address", "::1", "--duid", "00:01:02")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("not allowed with argument", output.err)

    def test_leasesBadState(self) -> None:
        """--state names binding states (or all); anything else is a usage error."""
        for value in ("bogus", "active,nope", ","):
            output = Output()
            code = output.run("-s", self.path, "leases", "--state", value)
            self.assertEqual(code, EXIT_USAGE, value)
            self.assertIn("argument --state/-S", output.err)
        output = Output()
        output.run("-s", self.path, "leases", "--state", "bogus")
        self.assertIn("unknown binding state 'bogus' (the states: active, expired,", output.err)

    def test_badTimeout(self) -> None:
        """A timeout of 0 or less."""
        output = Output()
        self.assertEqual(output.run("-s", self.path, "--timeout", "0", "status"), EXIT_USAGE)
        self.assertIn("--timeout must be above 0", output.err)

    def test_configWithoutControlSocket(self) -> None:
        """--config naming a file with no control-socket: say what to add."""
        path = self.config("")
        output = Output()
        self.assertEqual(output.run("--config", path, "status"), EXIT_USAGE)
        self.assertIn(
            f"{path} has no control socket: add 'control-socket = var/NAME.ctl' to its [server]",
            output.err,
        )

    def test_configBroken(self) -> None:
        """A broken --config: the configuration error."""
        path = self.config("port = 99999")
        output = Output()
        self.assertEqual(output.run("--config", path, "status"), EXIT_USAGE)
        self.assertIn("[server] port: expected a whole number", output.err)

    def test_socketMissing(self) -> None:
        """No socket: is the server running?  With --config, where the path came from."""
        output = Output()
        self.assertEqual(output.run("--socket", self.path, "status"), EXIT_USAGE)
        self.assertEqual(
            output.err,
            f"dhcp6ha-ctl: no control socket at {self.path}: is the server running?\n",
        )
        config = self.config(f"control-socket = {self.path}")
        output = Output()
        self.assertEqual(output.run("--config", config, "status"), EXIT_USAGE)
        self.assertIn("is the server running? (control-socket is set in " + config, output.err)

    def test_staleSocket(self) -> None:
        """A socket file nothing listens on."""
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.path)
        stale.close()
        output = Output()
        self.assertEqual(output.run("--socket", self.path, "status"), EXIT_USAGE)
        self.assertIn("nothing listens on", output.err)
        self.assertIn("the server is not running", output.err)

    def test_noAnswer(self) -> None:
        """A server that accepts and never answers: a timeout, status 2."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(self.path)
        listener.listen(1)
        output = Output()
        self.assertEqual(
            output.run("--socket", self.path, "--timeout", "0.2", "status"), EXIT_USAGE
        )
        self.assertIn("no answer from the server within 0.2s", output.err)

    def test_garbageAnswers(self) -> None:
        """Answers that are not control responses: status 2 and what was wrong."""
        for index, (answer, expected) in enumerate(
            [
                (b"", "closed the connection without answering"),
                (b"hello\n", "not JSON"),
                (b"[1]\n", "not a control response"),
            ]
        ):
            path = f"{self.path}.{index}"
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(listener.close)
            listener.bind(path)
            listener.listen(1)

            def serve(listener: socket.socket = listener, answer: bytes = answer) -> None:
                connection, _ = listener.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(answer)

            thread = threading.Thread(target=serve)
            thread.start()
            output = Output()
            try:
                code = output.run("--socket", path, "--timeout", "5", "status")
            finally:
                thread.join(5)
            self.assertEqual(code, EXIT_USAGE)
            self.assertIn(expected, output.err)


class EndToEndTests(TestCase):
    """
    C{dhcp6ha-ctl} against a real control socket, served by this process's
    reactor while the CLI runs in a thread.
    """

    def setUp(self) -> None:
        # Not under _trial_temp: the tests run as user nobody need every
        # directory above the socket to be searchable.
        self.directory = tempfile.mkdtemp(prefix="d6ha-ctl-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "s.ctl")
        self.relationship = FakeRelationship("lab-pair", {"state": "partner-down"})
        self.target, self.clock, self.holder, _ = makeTarget(
            filledStore(), relationships=(self.relationship,), scanBatch=100
        )
        service = ControlService(self.path, self.target, globalReactor)
        service.startService()
        self.addCleanup(service.stopService)

    async def ctl(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        output = Output(stdin)
        code = await deferToThread(output.run, "--socket", self.path, *argv)
        return code, output.out, output.err

    async def test_status(self) -> None:
        """status: the summary and the relationship's row."""
        code, out, err = await self.ctl("status")
        self.assertEqual((code, err), (EXIT_OK, ""))
        self.assertIn("server DUID 00:02:00:00:7e:d9:01:02:03:04", out)
        self.assertIn("  leases     active 5, expired 1 (6 in all)\n", out)
        self.assertIn("lab-pair      primary  COMMUNICATIONS-INTERRUPTED  for 10m00s", out)

    async def test_statusJSON(self) -> None:
        """--json prints the raw result, which parses."""
        code, out, _ = await self.ctl("--json", "status")
        self.assertEqual(code, EXIT_OK)
        status = json.loads(out)
        self.assertEqual(status["relationships"][0]["unacked_updates"], 12)
        self.assertEqual(status["leases"], {"active": 5, "expired": 1})

    async def test_leases(self) -> None:
        """leases by DUID, by address, by prefix, with --limit, as JSON."""
        code, out, _ = await self.ctl("leases", "--duid", CLIENT.hex(":"))
        self.assertEqual(code, EXIT_OK)
        self.assertTrue(out.endswith("\n4 leases\n"), out)
        code, out, _ = await self.ctl("--json", "leases", "--address", "2001:db8:1::1001")
        [found] = json.loads(out)["leases"]
        self.assertEqual(found["duid"], "00:03:00:01:02:00:00:00:00:10")
        code, out, _ = await self.ctl("leases", "--prefix", "2001:db8:100::/56")
        self.assertIn("2001:db8:100::/56", out)
        code, out, _ = await self.ctl("leases", "--limit", "2")
        self.assertIn("(the first 2 shown; more match", out)

    async def test_leasesStates(self) -> None:
        """
        A plain listing leaves the bindings without a client out (and says
        so); --state selects states (comma-separated or repeated), --state
        all shows everything; a lookup by address shows the binding
        whatever its state.
        """
        store = self.holder.store
        assert store is not None
        backup = evolve(
            lease("2001:db8:100:ff00::", length=56),
            state=BindingState.FREE_BACKUP,
            duid=b"",
            iaid=0,
            expires=0.0,
        )
        await store.commit([backup])
        code, out, _ = await self.ctl("leases")
        self.assertEqual(code, EXIT_OK)
        self.assertNotIn("free-backup  ", out)
        self.assertIn("\n6 leases\n(free and free-backup bindings, without a client,", out)
        code, out, _ = await self.ctl("leases", "--state", "free-backup")
        self.assertIn("2001:db8:100:ff00::/56  pd    free-backup  -     -     -\n1 lease\n", out)
        code, out, _ = await self.ctl("leases", "-S", "expired", "--state", "free-backup,active")
        self.assertIn("\n7 leases\n", out)
        code, out, _ = await self.ctl("leases", "--state", "all")
        self.assertIn("\n7 leases\n", out)
        self.assertNotIn("not shown", out)
        code, out, _ = await self.ctl("leases", "--state", "expired")
        self.assertIn("\n1 lease\n", out)
        code, out, _ = await self.ctl("leases", "--prefix", "2001:db8:100:ff00::/56")
        self.assertIn("free-backup", out)
        code, out, _ = await self.ctl("--json", "leases")
        self.assertEqual(len(json.loads(out)["leases"]), 6)

    async def test_leasesBadAddress(self) -> None:
        """The server's error: status 1 and its text."""
        code, out, err = await self.ctl("leases", "--address", "nope")
        self.assertEqual((code, out), (EXIT_SERVER_ERROR, ""))
        self.assertEqual(
            err,
            "dhcp6ha-ctl: leases failed: expected an IPv6 address like 2001:db8::1, got 'nope'\n",
        )

    async def test_partnerDownYes(self) -> None:
        """partner-down --yes: warned, not asked, done."""
        code, out, err = await self.ctl("partner-down", "lab-pair", "--yes")
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(self.relationship.calls, ["partnerDown"])
        self.assertIn("Do this ONLY when the partner is really down", err)
        self.assertIn("this server (primary) is COMMUNICATIONS-INTERRUPTED for 10m00s", err)
        self.assertNotIn("Type the relationship name", err)
        self.assertEqual(out, "partner-down lab-pair: done (state partner-down)\n")

    async def test_partnerDownConfirmed(self) -> None:
        """partner-down confirmed by typing the relationship's name."""
        code, out, err = await self.ctl("partner-down", "lab-pair", stdin="lab-pair\n")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("Type the relationship name (lab-pair) to confirm: ", err)
        self.assertEqual(self.relationship.calls, ["partnerDown"])

    async def test_partnerDownNotConfirmed(self) -> None:
        """Anything but the name (y, an empty line, end of input): nothing done, status 2."""
        for answer in ("y\n", "\n", "", "lab\n"):
            code, out, err = await self.ctl("partner-down", "lab-pair", stdin=answer)
            self.assertEqual((code, out), (EXIT_USAGE, ""))
            self.assertTrue(err.endswith("Not confirmed: nothing done.\n"), err)
        self.assertEqual(self.relationship.calls, [])

    async def test_partnerDownJSON(self) -> None:
        """With --json the result alone goes to standard output."""
        code, out, _ = await self.ctl("--json", "partner-down", "lab-pair", "-y")
        self.assertEqual((code, json.loads(out)), (EXIT_OK, {"state": "partner-down"}))

    async def test_partnerDownConnected(self) -> None:
        """A connected partner gets a louder warning."""
        self.relationship.connected = True
        code, _, err = await self.ctl("partner-down", "lab-pair", "--yes")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("The partner is CONNECTED to this server right now: it is NOT down.", err)

    async def test_partnerDownUnknown(self) -> None:
        """An unknown relationship: status 1, no question asked."""
        code, _, err = await self.ctl("partner-down", "other", stdin="other\n")
        self.assertEqual(code, EXIT_SERVER_ERROR)
        self.assertEqual(
            err,
            "dhcp6ha-ctl: partner-down failed: no relationship named 'other'"
            " (this server has: lab-pair)\n",
        )
        self.assertEqual(self.relationship.calls, [])

    async def test_partnerDownStandalone(self) -> None:
        """A server without failover says so."""
        self.target.removeRelationship("lab-pair")
        code, _, err = await self.ctl("partner-down", "lab-pair", "--yes")
        self.assertEqual(code, EXIT_SERVER_ERROR)
        self.assertIn("(this server has none: it runs without failover)", err)

    async def test_partnerDownRefused(self) -> None:
        """The relationship refuses: status 1 with its reason."""
        self.relationship.result = ControlError("refused in state recover")
        code, _, err = await self.ctl("partner-down", "lab-pair", "--yes")
        self.assertEqual(code, EXIT_SERVER_ERROR)
        self.assertTrue(err.endswith("partner-down failed: refused in state recover\n"), err)

    async def test_sync(self) -> None:
        """sync: no confirmation; the result printed."""
        self.relationship.result = None
        code, out, _ = await self.ctl("sync", "lab-pair")
        self.assertEqual((code, out), (EXIT_OK, "sync lab-pair: done\n"))
        self.relationship.result = "requested"
        code, out, _ = await self.ctl("sync", "lab-pair")
        self.assertEqual(out, "sync lab-pair: requested\n")
        self.assertEqual(self.relationship.calls, ["sync", "sync"])

    async def test_syncUnknown(self) -> None:
        """sync of an unknown relationship: status 1."""
        code, _, err = await self.ctl("sync", "x")
        self.assertEqual(code, EXIT_SERVER_ERROR)
        self.assertIn("no relationship named 'x'", err)

    async def test_requestFunction(self) -> None:
        """request() returns the result or raises ServerError."""
        result = await deferToThread(request, self.path, {"command": "status"})
        self.assertEqual(result["relationships"][0]["name"], "lab-pair")
        failure = await deferToThread(
            lambda: self.assertRaises(ServerError, request, self.path, {"command": "x"})
        )
        self.assertIn("unknown command 'x'", str(failure))

    async def _asNobody(self, *argv: str) -> tuple[int, str, str]:
        """
        Run L{main} as user nobody, in a forked child (the CLI needs no
        reactor), while this process's reactor serves the socket.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root, to run the CLI as another user")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise self.skipTest("no user 'nobody'") from None
        os.chmod(self.directory, 0o755)
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            status = 0
            try:
                os.close(reading)
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                output = Output()
                code = output.run("--socket", self.path, "--timeout", "10", *argv)
                os.write(writing, json.dumps([code, output.out, output.err]).encode())
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(writing)

        def wait() -> bytes:
            with os.fdopen(reading, "rb") as f:
                data = f.read()
            os.waitpid(pid, 0)
            return data

        data = await deferToThread(wait)
        code, out, err = json.loads(data)
        return int(code), str(out), str(err)

    async def test_permissionDenied(self) -> None:
        """Another user cannot open the 0600 socket: a clear message, status 2."""
        code, _, err = await self._asNobody("status")
        self.assertEqual(code, EXIT_USAGE, err)
        self.assertIn(f"permission denied on {self.path}: the control socket is for", err)

    async def test_otherUidRefused(self) -> None:
        """
        Even if the socket's mode let another user in, the server refuses
        them (their uid, from SO_PEERCRED): status 1.
        """
        os.chmod(self.path, 0o666)
        code, _, err = await self._asNobody("status")
        self.assertEqual(code, EXIT_SERVER_ERROR, err)
        self.assertIn("permission denied: this control socket is for the server's user", err)


class RealServerTests(TestCase):
    """
    C{dhcp6ha-ctl} against the whole server of L{makeService}: SQLite
    store, UDP on ::1 (port 0) and the control socket.
    """

    timeout = 30

    async def test_statusAndLeases(self) -> None:
        """
        The control socket is part of the service: status and leases read
        the SQLite store; stopping removes the socket.
        """
        directory = tempfile.mkdtemp(prefix="d6ha-ctl-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "server.ctl")
        config = parseConfigText(
            "[server]\naddress = ::1\nport = 5547\n"
            f"database = {os.path.join(directory, 'leases.sqlite')}\n"
            f"control-socket = {path}\n"
            "[subnet:lab]\nprefix = 2001:db8:1::/64\npools = 2001:db8:1::1000-2001:db8:1::1fff\n",
            "real.ini",
        )
        config = evolve(config, server=evolve(config.server, port=0))
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            probe.bind(("::1", 0))
            probe.close()
        except OSError as e:
            raise self.skipTest(f"no IPv6 loopback: {e}") from None
        top = makeService(config, globalReactor)
        top.startService()
        self.addCleanup(lambda: top.stopService() if top.running else None)
        store = top.getServiceNamed("leases").store
        assert store is not None
        await store.commit([lease("2001:db8:1::1000"), lease("2001:db8:1::1001", iaid=2)])

        output = Output()
        code = await deferToThread(output.run, "--socket", path, "--json", "status")
        self.assertEqual(code, EXIT_OK, output.err)
        status = json.loads(output.out)
        self.assertEqual(status["leases"], {"active": 2})
        self.assertEqual(
            status["server"]["port"], top.getServiceNamed("dhcpv6").port.getHost().port
        )
        self.assertEqual(status["relationships"], [])

        output = Output()
        code = await deferToThread(output.run, "--socket", path, "leases", "--duid", CLIENT.hex())
        self.assertEqual(code, EXIT_OK, output.err)
        self.assertIn("2001:db8:1::1001  na    active", output.out)
        self.assertTrue(output.out.endswith("\n2 leases\n"), output.out)

        await top.stopService()
        self.assertFalse(os.path.exists(path))
