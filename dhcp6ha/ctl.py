# -*- test-case-name: tests.test_ctl -*-
"""
C{dhcp6ha-ctl}: the operator's command line for a running dhcp6ha server,
through its control socket (C{[server] control-socket}, see
L{dhcp6ha.control} for the protocol)::

    dhcp6ha-ctl --config etc/primary.ini status
    dhcp6ha-ctl --socket var/primary.ctl leases --duid 00:03:00:01:02:00:00:00:00:09
    dhcp6ha-ctl --config etc/primary.ini leases --state expired,released
    dhcp6ha-ctl --config etc/primary.ini partner-down lab-pair
    dhcp6ha-ctl --config etc/primary.ini --json status | jq .relationships

C{leases} with no address, prefix or DUID lists the bindings held by
clients: bindings without a client (C{free}, C{free-backup}: the
secondary's reserve of delegable prefixes, which can be thousands of
records) are left out unless C{--state} asks for them (C{--state all}: every
binding).  Such bindings show C{-} for DUID, IAID and expiry.

It uses plain blocking sockets and imports neither Twisted nor the server
(only L{dhcp6ha.config}, for C{--config}, and the binding states): it
starts fast.

Exit status: 0 done; 1 the server answered with an error (the command was
refused or failed); 2 nothing was done: a usage error, the server cannot be
reached, or a confirmation was not given.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from dhcp6ha._cli import EXIT_USAGE, Exit, Parser
from dhcp6ha.leases.lease import BindingState

__all__ = [
    "EXIT_OK",
    "EXIT_SERVER_ERROR",
    "EXIT_USAGE",
    "ConnectionProblem",
    "ServerError",
    "formatDuration",
    "formatLeases",
    "formatStatus",
    "main",
    "request",
]

EXIT_OK = 0
EXIT_SERVER_ERROR = 1

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for the server (to connect, and for each read)."""

MAX_RESPONSE = 256 * 1024 * 1024
"""Largest response read (a long lease list is big, but not unbounded)."""

UNHELD_STATES = (BindingState.FREE.value, BindingState.FREE_BACKUP.value)
"""States of bindings without a client: left out of a plain C{leases} listing."""

HELD_STATES = tuple(state.value for state in BindingState if state.value not in UNHELD_STATES)
"""What C{leases} lists when nothing selects the bindings."""


class ConnectionProblem(Exception):
    """The server could not be asked: the message says why, for the operator."""


class ServerError(Exception):
    """The server answered with an error (its text is the message)."""


# --- talking to the server ---------------------------------------------------------------


def request(path: str, message: Mapping[str, object], timeout: float = DEFAULT_TIMEOUT) -> Any:
    """
    Send one request to the control socket at C{path} and return the
    result of its response.

    @raise ConnectionProblem: the socket cannot be reached or the answer is
        not a response.
    @raise ServerError: the server answered C{{"ok": false}}.
    """
    line = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ConnectionProblem(
                f"no control socket at {path}: is the server running?"
            ) from None
        except ConnectionRefusedError:
            raise ConnectionProblem(
                f"nothing listens on {path}: the server is not running (the socket file is"
                " left over from an earlier run)"
            ) from None
        except PermissionError:
            raise ConnectionProblem(
                f"permission denied on {path}: the control socket is for the user the server"
                " runs as (and root); run dhcp6ha-ctl as that user"
            ) from None
        except TimeoutError:
            raise ConnectionProblem(
                f"{path}: the server did not accept within {timeout:g}s"
            ) from None
        except OSError as e:
            raise ConnectionProblem(f"cannot connect to {path}: {e.strerror or e}") from None
        try:
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                # The server may have answered before closing (a refusal):
                # its answer is still there to read.
                pass
            answer = _readLine(sock)
        except TimeoutError:
            raise ConnectionProblem(
                f"no answer from the server within {timeout:g}s (try a longer --timeout)"
            ) from None
        except OSError as e:
            raise ConnectionProblem(f"connection to {path} failed: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        response = json.loads(answer)
    except ValueError as e:
        raise ConnectionProblem(f"the server's answer is not JSON ({e})") from None
    if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
        raise ConnectionProblem("the server's answer is not a control response")
    if not response["ok"]:
        raise ServerError(str(response.get("error", "unknown error")))
    return response.get("result")


def _readLine(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionProblem("the server closed the connection without answering")
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise ConnectionProblem(f"the server's answer is longer than {MAX_RESPONSE} bytes")


# --- formatting -------------------------------------------------------------------------


def formatDuration(seconds: float) -> str:
    """
    A duration for people: C{"12s"}, C{"3m12s"}, C{"3h02m"}, C{"2d03h"}
    (negative durations, from clocks that disagree, count as 0).
    """
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _since(when: object, now: float) -> str:
    if not isinstance(when, int | float) or isinstance(when, bool):
        return "-"
    return "for " + formatDuration(now - when)


def _ago(when: object, now: float) -> str:
    if not isinstance(when, int | float) or isinstance(when, bool):
        return "never"
    return formatDuration(now - when) + " ago"


def _milliseconds(seconds: object) -> str:
    """A duration in seconds as milliseconds (two decimals below 10 ms)."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    ms = 1000 * seconds
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:,.0f} ms"


def _lag(replication: object) -> str:
    """
    The replication lag (a change's reply to the partner's ack) of a
    relationship's status, median and 99th percentile since the server
    started: C{-} before any ack.
    """
    lag = replication.get("lag") if isinstance(replication, dict) else None
    if not isinstance(lag, dict) or not lag.get("count"):
        return "-"
    median, p99 = _milliseconds(lag.get("p50")), _milliseconds(lag.get("p99"))
    return f"{median.removesuffix(' ms')}/{p99}"


def _until(when: float, now: float) -> str:
    if when >= now:
        return "in " + formatDuration(when - now)
    return formatDuration(now - when) + " ago"


def _timestamp(when: float) -> str:
    try:
        return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return repr(when)


def _state(value: object) -> str:
    return "-" if value is None else str(value).upper()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def formatStatus(status: Mapping[str, Any]) -> str:
    """
    The result of C{status} for people: a summary of the server, then one
    line per failover relationship (own state and since when, partner's
    state, unacked updates, replication lag, last contact, clock skew).
    Times are shown relative to the server's C{"now"}.
    """
    now = float(status.get("now", 0.0))
    server = status.get("server") or {}
    lines: list[str] = []
    duid = server.get("duid")
    title = f"dhcp6ha {status.get('version', '?')}"
    if duid:
        title += f", server DUID {duid}"
        if server.get("duid_description"):
            title += f" ({server['duid_description']})"
    else:
        title += ", not started"
    lines.append(title)
    interfaces = server.get("interfaces") or []
    where = f"[{server.get('address', '?')}]:{server.get('port', '?')}"
    where += (
        ", and ff02::1:2 on " + ", ".join(interfaces) if interfaces else ", relayed clients only"
    )
    summary = [("listening", where), ("serving", "yes" if server.get("serving") else "NO")]
    started = server.get("started")
    if isinstance(started, int | float):
        summary.append(("up", f"{formatDuration(now - started)} (since {_timestamp(started)})"))
    summary.append(
        ("config", f"{server.get('config', '?')} (database {server.get('database', '?')})")
    )
    datagrams = status.get("datagrams") or {}
    summary.append(
        (
            "datagrams",
            f"received {datagrams.get('received', 0)}, sent {datagrams.get('sent', 0)},"
            f" dropped {datagrams.get('dropped', 0)}",
        )
    )
    for key, label, counted, after in (
        ("response_time", "replies", "sent", "after reading the request"),
        ("queue_wait", "queued", "read", "waiting in the socket buffer"),
    ):
        durations = status.get(key)
        if isinstance(durations, dict) and durations.get("count"):
            summary.append(
                (
                    label,
                    f"{durations['count']} {counted}, {_milliseconds(durations.get('p50'))}"
                    f" median, {_milliseconds(durations.get('p99'))} p99,"
                    f" {_milliseconds(durations.get('max'))} max {after}",
                )
            )
    leases = status.get("leases")
    if isinstance(leases, dict):
        if leases:
            counts = ", ".join(f"{state} {n}" for state, n in sorted(leases.items()))
            summary.append(("leases", f"{counts} ({sum(leases.values())} in all)"))
        else:
            summary.append(("leases", "none"))
    else:
        summary.append(("leases", f"unknown: {status.get('leases_error', 'not available')}"))
    width = max(len(label) for label, _ in summary)
    lines.extend(f"  {label.ljust(width)}  {value}" for label, value in summary)
    lines.append("")
    relationships = status.get("relationships") or []
    if not relationships:
        lines.append("No failover relationship: this server runs alone.")
        return "\n".join(lines) + "\n"
    header = [
        "RELATIONSHIP",
        "ROLE",
        "STATE",
        "SINCE",
        "PARTNER",
        "SINCE",
        "UNACKED",
        "LAG P50/P99",
        "CONTACT",
        "SKEW",
    ]
    rows: list[list[str]] = []
    errors: list[str] = []
    for entry in relationships:
        if "error" in entry:
            errors.append(f"{entry.get('name', '?')}: {entry['error']}")
            continue
        skew = entry.get("clock_skew")
        partner = _state(entry.get("partner_state"))
        if not entry.get("connected"):
            partner += " (not connected)"
        rows.append(
            [
                str(entry.get("name", "?")),
                str(entry.get("role", "?")),
                _state(entry.get("state")),
                _since(entry.get("state_since"), now),
                partner,
                _since(entry.get("partner_state_since"), now),
                str(entry.get("unacked_updates", "-")),
                _lag(entry.get("replication")),
                _ago(entry.get("last_contact"), now),
                "-" if not isinstance(skew, int | float) else f"{skew:+.1f}s",
            ]
        )
    if rows:
        lines.extend(_table(header, rows))
    lines.extend(f"relationship {error}" for error in errors)
    return "\n".join(lines) + "\n"


def formatLeases(result: Mapping[str, Any], hidden: Sequence[str] = ()) -> str:
    """
    The result of C{leases} for people: one line per binding.  A binding
    without a client (C{free}, C{free-backup}, or no DUID) has no client,
    IAID or expiry to show: C{-}.

    @param hidden: the states the request left out, to say so.
    """
    now = float(result.get("now", 0.0))
    leases = result.get("leases") or []
    note = (
        f"({' and '.join(hidden)} bindings, without a client, not shown:"
        " --state all shows every binding)"
        if hidden
        else None
    )
    if not leases:
        return "No lease found.\n" + ("" if note is None else note + "\n")
    rows = []
    for lease in leases:
        where = str(lease.get("address"))
        if lease.get("prefix_length") != 128:
            where = str(lease.get("prefix"))
        expires = lease.get("expires")
        if lease.get("state") in UNHELD_STATES or not lease.get("duid"):
            held = False
        else:
            held = isinstance(expires, int | float) and not isinstance(expires, bool)
        rows.append(
            [
                where,
                str(lease.get("lease_type", "?")),
                str(lease.get("state", "?")),
                str(lease.get("duid") or "-") if held else "-",
                str(lease.get("iaid", "-")) if held else "-",
                _until(float(expires), now) if held else "-",
            ]
        )
    lines = _table(["ADDRESS/PREFIX", "TYPE", "STATE", "DUID", "IAID", "EXPIRES"], rows)
    count = len(leases)
    if result.get("truncated"):
        lines.append(f"(the first {count} shown; more match: use --limit to see more)")
    else:
        lines.append(f"{count} lease{'' if count == 1 else 's'}")
    if note is not None:
        lines.append(note)
    return "\n".join(lines) + "\n"


# --- the command line ----------------------------------------------------------------------


_PARTNER_DOWN_WARNING = """\
partner-down tells this server that its partner in relationship {name}
is down and will stay down: this server then serves every client of the
relationship, the partner's included, with no MCLT limit, and may in time
give the partner's free prefixes to other clients.

Do this ONLY when the partner is really down (stopped, powered off, or cut
off from every client) and will not come back before you have checked it.
If the partner is in fact still serving clients, both servers may give the
same address or prefix to two different clients.
"""


def _build(out: IO[str], err: IO[str]) -> Parser:
    parser = Parser(
        prog="dhcp6ha-ctl",
        description="Ask a running dhcp6ha server about its state, or tell it what to do.",
        epilog=(
            "Exit status: 0 done; 1 the server refused or failed; 2 nothing done (usage,"
            " cannot reach the server, not confirmed)."
        ),
    )
    parser.out, parser.err = out, err
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", "-s", metavar="PATH", help="the server's control socket")
    where.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="the server's ini file: its [server] control-socket is used",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the server's raw result as JSON (for scripts)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the server (default {DEFAULT_TIMEOUT:g})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def subparser(name: str, **kwargs: Any) -> Parser:
        sub: Parser = commands.add_parser(name, **kwargs)
        sub.out, sub.err = out, err
        return sub

    subparser("status", help="the server and its failover relationships")
    leases = subparser("leases", help="bindings of an address, a prefix or a client")
    which = leases.add_mutually_exclusive_group()
    which.add_argument("--address", "-a", metavar="ADDRESS", help="an IPv6 address")
    which.add_argument("--prefix", "-p", metavar="PREFIX", help="a delegated prefix, e.g. X::/56")
    which.add_argument("--duid", "-d", metavar="DUID", help="a client DUID in hex (every IA)")
    leases.add_argument(
        "--limit", type=int, default=None, metavar="N", help="show at most N bindings"
    )
    leases.add_argument(
        "--state",
        "-S",
        action="append",
        type=_stateList,
        metavar="STATE",
        help="only bindings in these states (comma-separated or repeated: "
        + ", ".join(state.value for state in BindingState)
        + "; 'all' for every binding).  Default: every binding of an address,"
        " prefix or DUID asked for; otherwise the bindings held by clients"
        " (not free, not free-backup)",
    )
    down = subparser(
        "partner-down",
        help="declare a relationship's partner down (asks for confirmation)",
        description=_PARTNER_DOWN_WARNING.format(name="NAME"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    down.add_argument("relationship", metavar="NAME", help="the relationship ([failover:NAME])")
    down.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation (for scripts)"
    )
    sync = subparser("sync", help="resynchronise a relationship with its partner now")
    sync.add_argument("relationship", metavar="NAME", help="the relationship ([failover:NAME])")
    return parser


def _socketPath(args: argparse.Namespace) -> str:
    if args.socket is not None:
        return str(args.socket)
    if args.config is None:
        raise Exit(
            EXIT_USAGE,
            "dhcp6ha-ctl: error: give the control socket: --socket PATH, or --config FILE"
            " (the server's ini file)\n",
        )
    from dhcp6ha.config import ConfigError, parseConfig

    try:
        config = parseConfig(args.config, checkFiles=False)
    except ConfigError as e:
        raise Exit(EXIT_USAGE, f"dhcp6ha-ctl: {e}\n") from None
    path = config.server.control_socket
    if path is None:
        raise Exit(
            EXIT_USAGE,
            f"dhcp6ha-ctl: {args.config} has no control socket: add"
            " 'control-socket = var/NAME.ctl' to its [server] section and restart the server\n",
        )
    return path


def _confirm(args: argparse.Namespace, path: str, stdin: IO[str], err: IO[str]) -> bool:
    """Warn about partner-down and ask for the relationship's name."""
    name = args.relationship
    status = request(path, {"command": "status"}, args.timeout)
    entries = {
        entry.get("name"): entry
        for entry in (status or {}).get("relationships", [])
        if isinstance(entry, dict)
    }
    if name not in entries:
        if entries:
            which = "this server has: " + ", ".join(sorted(str(n) for n in entries))
        else:
            which = "this server has none: it runs without failover"
        raise ServerError(f"no relationship named {name!r} ({which})")
    entry = entries[name]
    now = float(status.get("now", 0.0))
    err.write(_PARTNER_DOWN_WARNING.format(name=name))
    err.write(
        f"\nNow: this server ({entry.get('role', '?')}) is {_state(entry.get('state'))}"
        f" {_since(entry.get('state_since'), now)}; partner"
        f" {_state(entry.get('partner_state'))}, last contact"
        f" {_ago(entry.get('last_contact'), now)}.\n"
    )
    if entry.get("connected"):
        err.write("\nThe partner is CONNECTED to this server right now: it is NOT down.\n")
    if args.yes:
        return True
    err.write(f"\nType the relationship name ({name}) to confirm: ")
    err.flush()
    answer = stdin.readline()
    if answer.strip() != name:
        err.write(("" if answer.endswith("\n") else "\n") + "Not confirmed: nothing done.\n")
        return False
    return True


def _stateList(text: str) -> list[str]:
    """One C{--state} value: state names separated by commas, or C{all}."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    known = [state.value for state in BindingState]
    for name in names:
        if name != "all" and name not in known:
            raise argparse.ArgumentTypeError(
                f"unknown binding state {name!r} (the states: {', '.join(known)}; or all)"
            )
    if not names:
        raise argparse.ArgumentTypeError("name at least one binding state")
    return names


def _leaseStates(args: argparse.Namespace) -> tuple[list[str] | None, tuple[str, ...]]:
    """
    The states to ask for (C{None}: every state) and those left out by
    default, from C{--state} and the selection.
    """
    if args.state is None:
        if args.address is None and args.prefix is None and args.duid is None:
            return list(HELD_STATES), UNHELD_STATES
        return None, ()
    names = [name for group in args.state for name in group]
    if "all" in names:
        return None, ()
    return sorted(set(names), key=names.index), ()


def _show(command: str, result: Any, args: argparse.Namespace, out: IO[str]) -> None:
    if args.json:
        out.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return
    if command == "status":
        out.write(formatStatus(result))
    elif command == "leases":
        out.write(formatLeases(result, _leaseStates(args)[1]))
    elif isinstance(result, dict) and result:
        details = ", ".join(f"{key} {value}" for key, value in result.items())
        out.write(f"{command} {args.relationship}: done ({details})\n")
    elif result is None or result == {}:
        out.write(f"{command} {args.relationship}: done\n")
    else:
        out.write(f"{command} {args.relationship}: {result}\n")


def main(
    argv: Sequence[str] | None = None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """
    Run C{dhcp6ha-ctl} with these arguments (default: C{sys.argv[1:]}).

    @return: the exit status.
    """
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    parser = _build(out, err)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
        path = _socketPath(args)
    except Exit as e:
        return e.report(err)
    if args.timeout <= 0:
        err.write("dhcp6ha-ctl: error: --timeout must be above 0\n")
        return EXIT_USAGE
    command: str = args.command
    message: dict[str, object] = {"command": command}
    if command == "leases":
        for key in ("address", "prefix", "duid", "limit"):
            value = getattr(args, key)
            if value is not None:
                message[key] = value
        states = _leaseStates(args)[0]
        if states is not None:
            message["state"] = states
    elif command in ("partner-down", "sync"):
        message["relationship"] = args.relationship
    try:
        if command == "partner-down" and not _confirm(args, path, stdin, err):
            return EXIT_USAGE
        result = request(path, message, args.timeout)
    except ConnectionProblem as e:
        hint = ""
        if args.config is not None and "no control socket" in str(e):
            hint = (
                f" (control-socket is set in {args.config}; a relative path is relative to the"
                " server's current directory)"
            )
        err.write(f"dhcp6ha-ctl: {e}{hint}\n")
        return EXIT_USAGE
    except ServerError as e:
        err.write(f"dhcp6ha-ctl: {command} failed: {e}\n")
        return EXIT_SERVER_ERROR
    _show(command, result, args, out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
