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
  - C{test_failover}: a failover pair of processes over real TLS on
    loopback (harness: C{pair}): every lease change on the primary reaches
    the secondary's database; SIGKILL and restart of either side loses no
    update.
  - C{test_tls_refusal}: a secondary process refuses primaries with a
    certificate from another CA, another identity, an expired certificate,
    and plaintext AMP, with the reason in its log.
  - C{test_m_to_1}: three processes, one of them in two relationships
    (secondary of one, primary of the other); each subnet replicated to its
    own partner only.
  - C{test_lease_stability}: dhclient and dhcpcd on a bridge shared with
    the pair; the primary killed, the secondary answers the Renew naming it
    with the same address and prefix.
  - C{test_more_clients}: WIDE dhcp6c (Debian) and busybox udhcpc6 (not
    built into Debian 12's busybox: skipped unless C{D6HA_UDHCPC6} names a
    binary that has it): bind, renew, release, stateless.
  - C{test_chaos}: the fixed chaos seeds and the seeds of every finding
    (docs/chaos-findings.rst), with the history checker.
  - C{test_recovery}: recovery of the pair (tools: C{partition}): the
    primary killed and declared down (RECOVER or POTENTIAL-CONFLICT), its
    database lost (UPDREQALL), the partner link cut and healed, partner-down
    on a live partner; no lease for two clients, every client keeps its own.

They need root (network namespaces), iproute2, isc-dhcp-client,
dhcpcd-base, wide-dhcpv6-client, faketime and tcpdump (optional: captures for diagnosis); each test skips
with the reason when something is missing.  C{test_durability} falls back to
C{::1} in the current namespace without root.  Run them with::

    sudo .venv/bin/python -b -m twisted.trial tests.integration

Every namespace is named C{d6ha-PID-N-ROLE} and removed at cleanup, with
the processes started in it; leftovers of a killed run are removed by the
next one.  Files (server logs, client logs and hook records, pcap captures,
the lease database) stay in C{_trial_temp} for diagnosis.  Set
C{D6HA_SERVER_TREE} to run the server from another checkout.
"""
