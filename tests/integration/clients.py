# -*- test-case-name: tests.integration.test_clients -*-
"""
Real Debian DHCPv6 clients, run in a namespace by the integration tests.

Each client gets a hook script of our own that only appends its environment
to C{events.log} in the test directory (so nothing touches
/etc/resolv.conf or configures anything on the host), and keeps its lease,
PID and DUID files in the test directory wherever the client allows it.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

from tests.integration.netns import (
    CleanupRegistry,
    Namespace,
    Process,
    waitFor,
)

DHCLIENT = "dhclient"
DHCPCD = "dhcpcd"

_SCRIPT = """#!/bin/sh
# Records one hook call: built in a temporary file, appended in one piece and
# closed by an END line, so that a reader never sees half a record.
tmp=$(mktemp {events}.XXXXXX)
{{
  echo "=== $reason"
  env | grep -E '^(reason|interface|new_|old_|cur_|requested_|protocol|ifname)' | sort
  echo "=== END"
}} > "$tmp"
cat "$tmp" >> {events}
rm -f "$tmp"
exit 0
"""


def writeRecorder(directory: Path) -> tuple[Path, Path]:
    """Write the recording hook script; return (script, events file)."""
    events = directory / "events.log"
    script = directory / "record-env.sh"
    script.write_text(_SCRIPT.format(events=str(events)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    events.touch()
    return script, events


def readEvents(events: Path) -> list[dict[str, str]]:
    """Every complete hook invocation recorded so far, oldest first."""
    out: list[dict[str, str]] = []
    try:
        text = events.read_text(errors="replace")
    except OSError:
        return out
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line == "=== END":
            if current is not None:
                out.append(current)
            current = None
        elif line.startswith("=== "):
            current = {"reason": line[4:].strip()}
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return out


class ClientBase:
    """Common parts: the directory, the recorder, the process, waiting for events."""

    binary: str

    def __init__(self, ns: Namespace, iface: str, directory: Path) -> None:
        self.ns = ns
        self.iface = iface
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.script, self.eventsPath = writeRecorder(directory)
        self.process: Process | None = None

    def events(self) -> list[dict[str, str]]:
        return readEvents(self.eventsPath)

    def diagnostics(self) -> str:
        parts = [f"--- events: {[e['reason'] for e in self.events()]}"]
        if self.process is not None:
            parts.append(self.process.logTail(60))
        return "\n".join(parts)

    async def waitEvent(
        self, reasons: set[str], timeout: float, after: int = 0
    ) -> tuple[int, dict[str, str]]:
        """
        Wait for a hook call whose reason is in C{reasons}, among the calls
        numbered C{after} and later; return (its index, its environment).
        """

        def find() -> tuple[int, dict[str, str]] | None:
            for i, event in enumerate(self.events()):
                if i >= after and event["reason"] in reasons:
                    return (i, event)
            return None

        return await waitFor(
            find,
            timeout,
            f"{self.binary} hook call with reason in {sorted(reasons)} (after #{after})",
            interval=0.2,
            details=self.diagnostics,
        )


class DHClient(ClientBase):
    """
    ISC dhclient 4.4 in DHCPv6 mode, in the foreground (C{-d}), with C{-sf},
    C{-lf} and C{-pf} in the test directory and a DUID-LL (C{-D LL}).
    """

    binary = DHCLIENT

    def __init__(self, ns: Namespace, iface: str, directory: Path) -> None:
        super().__init__(ns, iface, directory)
        self.leaseFile = directory / "dhclient6.leases"
        self.pidFile = directory / "dhclient6.pid"

    def _common(self, modes: tuple[str, ...]) -> list[str]:
        return [
            DHCLIENT, "-6", *modes, "-v", "-D", "LL",
            "-sf", str(self.script), "-lf", str(self.leaseFile), "-pf", str(self.pidFile),
        ]  # fmt: skip

    def start(self, testCase: CleanupRegistry, modes: tuple[str, ...] = ("-N",)) -> Process:
        """Run C{dhclient -6 MODES -d} (C{-N} addresses, C{-P} prefixes)."""
        self.modes = modes
        args = [*self._common(modes), "-d", self.iface]
        self.process = self.ns.spawn(testCase, args, self.directory / "dhclient.log")
        return self.process

    async def release(self, timeout: float = 20.0) -> str:
        """
        C{dhclient -6 -r}: stops the running dhclient (from the PID file)
        and sends a Release for the lease in the lease file; return its output.
        """
        log = self.directory / "dhclient-release.log"
        proc = Process(self.ns.command(*self._common(self.modes), "-r", self.iface), log)
        try:
            await proc.exited(timeout, "dhclient -r to finish")
        finally:
            proc.stop()
        return proc.log()

    def leaseFileText(self) -> str:
        try:
            return self.leaseFile.read_text()
        except OSError:
            return ""


class Dhcpcd(ClientBase):
    """
    dhcpcd 9 in DHCPv6-only mode with a configuration file of its own
    (C{-f}): no RS (C{noipv6rs}), the DUID given in the file, our recorder as
    its hook C{script}, IA_NA and/or IA_PD.  Its lease file is
    C{/var/lib/dhcpcd/IFACE.lease6} (fixed at build time): the test's
    interface name is unique, and the file is removed at cleanup.

    Releasing: C{dhcpcd -k IFACE} sends a Release (hook reasons RELEASE6
    then STOPPED) and exits without waiting for the Reply; C{dhcpcd -x}
    only stops, with no Release, unless the config says C{release}.  The
    config sets C{persistent}, so stopping leaves the address in place.
    """

    binary = DHCPCD

    def __init__(self, ns: Namespace, iface: str, directory: Path, duid: bytes) -> None:
        super().__init__(ns, iface, directory)
        self.duid = duid
        self.configFile = directory / "dhcpcd.conf"

    def writeConfig(self, iaNA: int | None, iaPD: int | None) -> None:
        lines = [
            "# written by tests/integration/clients.py",
            "ipv6only",
            "noipv6rs",
            "noipv4ll",
            "nooption domain_name_servers, domain_search",
            "script " + str(self.script),
            "duid " + ":".join(f"{b:02x}" for b in self.duid),
            "persistent",
            "timeout 0",
            "interface " + self.iface,
        ]
        if iaNA is not None:
            lines.append(f"  ia_na {iaNA}")
        if iaPD is not None:
            lines.append(f"  ia_pd {iaPD} -")
        self.configFile.write_text("\n".join(lines) + "\n")

    def _args(self, *extra: str) -> list[str]:
        return [DHCPCD, "-6", "-f", str(self.configFile), *extra, self.iface]

    def start(
        self, testCase: CleanupRegistry, iaNA: int | None = 1, iaPD: int | None = None
    ) -> Process:
        """Run C{dhcpcd -6 -B -d -f CONF IFACE} in the foreground."""
        self.writeConfig(iaNA, iaPD)
        testCase.addCleanup(self.removeState)
        self.process = self.ns.spawn(
            testCase, self._args("-B", "-d"), self.directory / "dhcpcd.log"
        )
        return self.process

    async def control(self, flag: str, timeout: float = 20.0) -> str:
        """Run C{dhcpcd -6 FLAG IFACE} (e.g. C{-k} release, C{-x} exit) against the running one."""
        log = self.directory / f"dhcpcd{flag}.log"
        proc = Process(self.ns.command(*self._args(flag)), log)
        try:
            await proc.exited(timeout, f"dhcpcd {flag} to finish")
        finally:
            proc.stop()
        return proc.log()

    def removeState(self) -> None:
        for name in (f"{self.iface}.lease6", f"{self.iface}.lease"):
            path = Path("/var/lib/dhcpcd") / name
            if path.exists():
                path.unlink()


def clientSkipReason(binary: str) -> str | None:
    if shutil.which(binary) is None:
        return f"{binary} is not installed"
    return None


def dhclientBytes(text: str) -> bytes:
    """
    A binary value as dhclient puts it in its script's environment: hex
    bytes joined by colons (C{0:3:0:1:f2:59}), or, when every byte is
    printable, a quoted string (C{"Fdb%"}, backslash escapes allowed).
    """
    if len(text) >= 2 and text[0] == text[-1] == '"':
        out = bytearray()
        inner = text[1:-1]
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                octal = inner[i + 1 : i + 4]
                if len(octal) == 3 and all(c in "01234567" for c in octal):
                    out.append(int(octal, 8))
                    i += 4
                    continue
                out.append(ord(inner[i + 1]))
                i += 2
                continue
            out.append(ord(inner[i]))
            i += 1
        return bytes(out)
    return bytes(int(part, 16) for part in text.split(":"))


def envLeases(event: dict[str, Any]) -> dict[str, str]:
    """The C{new_*} variables of one hook call (for messages)."""
    return {k: v for k, v in event.items() if k.startswith("new_")}


__all__ = [
    "DHClient",
    "Dhcpcd",
    "clientSkipReason",
    "dhclientBytes",
    "envLeases",
    "readEvents",
    "writeRecorder",
]
