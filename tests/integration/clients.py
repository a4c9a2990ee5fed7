# -*- test-case-name: tests.integration.test_clients -*-
"""
Real Debian DHCPv6 clients, run in a namespace by the integration tests.

Each client gets a hook script of our own that only appends its environment
to C{events.log} in the test directory (so nothing touches
/etc/resolv.conf or configures anything on the host), and keeps its lease,
PID and DUID files in the test directory wherever the client allows it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
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
DHCP6C = "dhcp6c"


def recorderScript(events: Path, reason: str, variables: str, prelude: str = "") -> str:
    """
    A client hook script that records one call in C{events}: a C{=== REASON}
    line (C{reason} is a shell word, e.g. C{$reason}), the environment
    variables whose C{NAME=value} line C{variables} (an extended regular
    expression) matches at its start, and an END line.  The
    record is built in a temporary file and appended in one piece, so that
    a reader never sees half of one.  C{prelude} runs first (shell lines).
    """
    return (
        "#!/bin/sh\n"
        + prelude
        + f"""tmp=$(mktemp {events}.XXXXXX)
{{
  echo "=== {reason}"
  env | grep -E '^{variables}' | sort
  echo "=== END"
}} > "$tmp"
cat "$tmp" >> {events}
rm -f "$tmp"
exit 0
"""
    )


def writeScript(path: Path, text: str) -> Path:
    """Write an executable script."""
    path.write_text(text)
    path.chmod(0o755)
    return path


def writeRecorder(directory: Path) -> tuple[Path, Path]:
    """Write the recording hook script; return (script, events file)."""
    events = directory / "events.log"
    script = writeScript(
        directory / "record-env.sh",
        recorderScript(
            events, "$reason", "(reason|interface|new_|old_|cur_|requested_|protocol|ifname)"
        ),
    )
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


#: Where dhcp6c keeps its DUID (C{dhcp6c_duid}), fixed at build time.
WIDE_STATE_DIR = Path("/var/lib/dhcpv6")


class WideDhcp6c(ClientBase):
    """
    WIDE-DHCPv6 C{dhcp6c} (Debian's wide-dhcpv6-client 20080615) in the
    foreground (C{-f -D}) with a configuration file of our own.

    dhcp6c configures what it gets itself: the IA_NA address on the
    interface (a /128), and for an IA_PD one /64 per C{prefix-interface}
    (SLA ID and length from the config) with an address made of that /64
    and the prefix interface's own interface identifier.  Its script is
    called with C{REASON=NBI} and the DNS options only, never with the
    leases: the test reads the interfaces instead.

    Its DUID lives in C{/var/lib/dhcpv6/dhcp6c_duid} (no option to move
    it): dhcp6c runs in a mount namespace of its own where that directory
    is a bind mount of one in the test directory, holding the DUID given
    here, so the host's file is neither read nor written.  It sends a
    Release for everything it holds on SIGTERM, and removes the addresses.
    """

    binary = DHCP6C

    def __init__(self, ns: Namespace, iface: str, directory: Path, duid: bytes) -> None:
        super().__init__(ns, iface, directory)
        self.duid = duid
        self.configFile = directory / "dhcp6c.conf"
        self.pidFile = directory / "dhcp6c.pid"
        self.stateDir = directory / "var-lib-dhcpv6"
        # dhcp6c calls it with REASON=NBI and the new_* variables (DNS only).
        self.script = writeScript(
            directory / "record-dhcp6c.sh",
            recorderScript(self.eventsPath, "${REASON:-none}", "(REASON|new_)"),
        )

    def writeConfig(
        self,
        iaNA: int | None,
        iaPD: int | None,
        prefixInterface: str | None = None,
        slaID: int = 1,
        slaLength: int = 8,
        informationOnly: bool = False,
    ) -> None:
        lines = ["# written by tests/integration/clients.py", f"interface {self.iface} {{"]
        if informationOnly:
            lines.append("  information-only;")
        if iaNA is not None:
            lines.append(f"  send ia-na {iaNA};")
        if iaPD is not None:
            lines.append(f"  send ia-pd {iaPD};")
        lines += [
            "  request domain-name-servers;",
            "  request domain-name;",
            f'  script "{self.script}";',
            "};",
        ]
        if iaNA is not None:
            lines.append(f"id-assoc na {iaNA} {{ }};")
        if iaPD is not None:
            lines.append(f"id-assoc pd {iaPD} {{")
            if prefixInterface is not None:
                lines += [
                    f"  prefix-interface {prefixInterface} {{",
                    f"    sla-id {slaID};",
                    f"    sla-len {slaLength};",
                    "  };",
                ]
            lines.append("};")
        self.configFile.write_text("\n".join(lines) + "\n")

    def writeDUID(self) -> None:
        """C{dhcp6c_duid}: the length (2 bytes, host order) then the DUID."""
        self.stateDir.mkdir(exist_ok=True)
        (self.stateDir / "dhcp6c_duid").write_bytes(struct.pack("=H", len(self.duid)) + self.duid)

    def start(
        self,
        testCase: CleanupRegistry,
        iaNA: int | None = 1,
        iaPD: int | None = None,
        prefixInterface: str | None = None,
        informationOnly: bool = False,
    ) -> Process:
        """
        Run C{dhcp6c -f -D -c CONF -p PIDFILE IFACE} with our DUID file:
        IA_NA C{iaNA}, IA_PD C{iaPD} (one /64 of it on C{prefixInterface},
        SLA ID 1), or with C{informationOnly} an Information-request only.
        """
        self.writeConfig(iaNA, iaPD, prefixInterface, informationOnly=informationOnly)
        self.writeDUID()
        args = [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", f'mount --bind "$0" {WIDE_STATE_DIR} && exec "$@"', str(self.stateDir),
            DHCP6C, "-f", "-D", "-c", str(self.configFile), "-p", str(self.pidFile), self.iface,
        ]  # fmt: skip
        self.process = self.ns.spawn(testCase, args, self.directory / "dhcp6c.log")
        return self.process


DIBBLER = "dibbler-client"

#: Where dibbler-client reads its configuration and keeps its state (DUID,
#: leases, PID, log), both fixed at build time.
DIBBLER_CONFIG_DIR = Path("/etc/dibbler")
DIBBLER_STATE_DIR = Path("/var/lib/dibbler")


class Dibbler(ClientBase):
    """
    Dibbler's C{dibbler-client run} (Debian's dibbler-client 1.0.1) with a
    configuration of our own.

    Its configuration (C{/etc/dibbler/client.conf}) and state directory
    (C{/var/lib/dibbler}: DUID, leases, PID, log) are fixed at build time,
    and it writes the DNS servers and domain it gets into
    C{/etc/resolv.conf}: it runs in a mount namespace of its own where
    those two directories are bind mounts of ones in the test directory and
    C{/etc/resolv.conf} one of a file there, so no host file is read or
    written.  Its DUID is the one given here (C{client-duid}, as hex bytes
    joined by colons).  It configures the IA_NA address on its interface
    itself, and sends a Release for what it holds on SIGTERM.
    """

    binary = DIBBLER

    def __init__(self, ns: Namespace, iface: str, directory: Path, duid: bytes) -> None:
        super().__init__(ns, iface, directory)
        self.duid = duid
        self.configDir = directory / "etc-dibbler"
        self.stateDir = directory / "var-lib-dibbler"
        self.resolvConf = directory / "resolv.conf"
        # dibbler calls it with the operation (add, update, delete) as its
        # first argument, and the leases and options in variables.
        self.script = writeScript(
            directory / "record-dibbler.sh",
            recorderScript(
                self.eventsPath,
                "${1:-none}",
                "(IFACE|IFINDEX|REMOTE_ADDR|CLNT_MESSAGE|ADDR|PREFIX|SRV_OPTION|OPTION)",
            ),
        )

    def writeConfig(self, ia: bool, pd: bool, stateless: bool = False) -> None:
        lines = [
            "# written by tests/integration/clients.py",
            "log-level 8",
            "log-mode full",
            f'script "{self.script}"',
            f'iface "{self.iface}" {{',
        ]
        if stateless:
            lines.append("  stateless")
        if ia:
            lines.append("  ia")
        if pd:
            lines.append("  pd")
        lines += ["  option dns-server", "  option domain", "}"]
        self.configDir.mkdir(exist_ok=True)
        (self.configDir / "client.conf").write_text("\n".join(lines) + "\n")

    def writeDUID(self) -> None:
        self.stateDir.mkdir(exist_ok=True)
        (self.stateDir / "client-duid").write_text(":".join(f"{b:02x}" for b in self.duid))

    def start(
        self, testCase: CleanupRegistry, ia: bool = True, pd: bool = False, stateless: bool = False
    ) -> Process:
        """Run C{dibbler-client run} with our configuration, DUID and state."""
        self.writeConfig(ia, pd, stateless)
        self.writeDUID()
        self.resolvConf.write_text("")
        mounts = (
            f'mount --bind "$0" {DIBBLER_CONFIG_DIR} && mount --bind "$1" {DIBBLER_STATE_DIR}'
            ' && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"'
        )
        args = [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", mounts, str(self.configDir), str(self.stateDir), str(self.resolvConf),
            DIBBLER, "run",
        ]  # fmt: skip
        self.process = self.ns.spawn(testCase, args, self.directory / "dibbler.log")
        return self.process

    def log(self) -> str:
        """dibbler's own log file (C{client.log} in its state directory)."""
        try:
            return (self.stateDir / "client.log").read_text(errors="replace")
        except OSError:
            return ""

    def diagnostics(self) -> str:
        return super().diagnostics() + "\n--- client.log\n" + self.log()[-6000:]


#: What udhcpc6's script does before recording: like busybox's sample
#: script it puts the address on the interface (bound, renew) or takes the
#: interface's global addresses off (deconfig), since udhcpc6 binds its
#: unicast Renew and Release to that address.  The event is its first
#: argument.
_UDHCPC6_CONFIGURE = """case "$1" in
  bound|renew)
    [ -n "$ipv6" ] && ip -6 addr replace "$ipv6/128" dev "$interface" nodad ;;
  deconfig)
    ip -6 addr flush dev "$interface" scope global ;;
esac
"""

#: Environment variable naming a C{udhcpc6} to use instead of the one found.
UDHCPC6_ENV = "D6HA_UDHCPC6"


def udhcpc6Command() -> list[str] | None:
    """
    How to run busybox's C{udhcpc6}: C{$D6HA_UDHCPC6} (a busybox binary or
    a link to one named udhcpc6), else C{udhcpc6} on the C{PATH}, else
    C{busybox udhcpc6} if the installed busybox has the applet; C{None}
    if none does.  Debian 12's busybox and busybox-static are built
    without it (C{CONFIG_UDHCPC6} is not set in any of its three
    configurations), so on Debian it takes a busybox built with it.
    """
    given = os.environ.get(UDHCPC6_ENV)
    if given:
        return [given] if Path(given).name == "udhcpc6" else [given, "udhcpc6"]
    found = shutil.which("udhcpc6")
    if found is not None:
        return [found]
    busybox = shutil.which("busybox")
    if busybox is not None:
        try:
            applets = subprocess.run(
                [busybox, "--list"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return None
        if "udhcpc6" in applets:
            return [busybox, "udhcpc6"]
    return None


class Udhcpc6(ClientBase):
    """
    busybox C{udhcpc6} in the foreground (C{-f -v}), our script (C{-s}),
    events C{deconfig}, C{bound}, C{renew}, C{leasefail}.  It configures
    nothing itself: its script gets the address (C{ipv6}, C{lease}) and the
    prefix (C{ipv6prefix}, C{ipv6prefix_lease}) and ours puts the address
    on the interface, as busybox's sample script does.  Its
    DUID is a DUID-LL of the interface's MAC.  With C{-R} it sends a
    Release when stopped with SIGTERM; SIGUSR1 renews at once, SIGUSR2
    releases.
    """

    binary = "udhcpc6"

    def __init__(self, ns: Namespace, iface: str, directory: Path, command: list[str]) -> None:
        super().__init__(ns, iface, directory)
        self.commandPrefix = command
        self.pidFile = directory / "udhcpc6.pid"
        self.script = writeScript(
            directory / "record-udhcpc6.sh",
            recorderScript(
                self.eventsPath,
                "$1",
                "(interface|ipv6|ipv6prefix|ipv6prefix_lease|lease|dns|search)=",
                prelude=_UDHCPC6_CONFIGURE,
            ),
        )

    def start(self, testCase: CleanupRegistry, *options: str) -> Process:
        """Run C{udhcpc6 -f -v -i IFACE -s SCRIPT -p PIDFILE OPTIONS}."""
        args = [
            *self.commandPrefix, "-f", "-v", "-i", self.iface, "-s", str(self.script),
            "-p", str(self.pidFile), *options,
        ]  # fmt: skip
        self.process = self.ns.spawn(testCase, args, self.directory / "udhcpc6.log")
        return self.process


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
    "Dibbler",
    "Udhcpc6",
    "WideDhcp6c",
    "clientSkipReason",
    "dhclientBytes",
    "envLeases",
    "readEvents",
    "recorderScript",
    "udhcpc6Command",
    "writeRecorder",
    "writeScript",
]
