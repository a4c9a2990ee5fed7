"""
Integration tests on real sockets and real processes.

  - C{test_netns}: the harness itself (namespaces, veth, sockets inside
    namespaces, dhclient and dhcpcd against a placeholder responder).
  - C{test_clients}: ISC dhclient and dhcpcd (Debian) against a dhcp6ha
    process in network namespaces: bind, renew, release, Confirm, stateless,
    renew across a SIGKILL of the server; the SQLite database checked at
    each step.
  - C{test_relay}: relayed clients (RELAY-FORW from Python, nested relays,
    a real dhclient behind a Python relay agent).
  - C{test_durability}: SIGKILL under load; every lease in a Reply is on
    disk and comes back after the restart.

They need root (network namespaces), iproute2, isc-dhcp-client,
dhcpcd-base and tcpdump (optional: captures for diagnosis); each test skips
with the reason when something is missing.  C{test_durability} falls back to
C{::1} in the current namespace without root.  Run them with::

    sudo .venv/bin/python -b -m twisted.trial tests.integration

Every namespace is named C{d6ha-PID-N-ROLE} and removed at cleanup, with
the processes started in it; leftovers of a killed run are removed by the
next one.  Files (server logs, client logs and hook records, pcap captures,
the lease database) stay in C{_trial_temp} for diagnosis.  Set
C{D6HA_SERVER_TREE} to run the server from another checkout.
"""
