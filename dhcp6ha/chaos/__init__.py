"""
Fault injection with a history checker (issue 5).

  - L{dhcp6ha.chaos.history}: the record of one run (what every simulated
    client sent and received, the faults, the servers' states, the final
    database dumps) and its JSON-lines form.
  - L{dhcp6ha.chaos.checker}: the invariants of DESIGN.md ("What never
    happens, whatever the fault") checked on such a record.
  - L{dhcp6ha.chaos.clients}: many simulated DHCPv6 clients in one process,
    speaking real DHCPv6 over UDP, relayed or on a link, recording every
    exchange.
"""

__all__: list[str] = []
