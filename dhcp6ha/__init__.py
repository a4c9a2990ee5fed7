"""
dhcp6ha: a DHCPv6 server (RFC 8415, with prefix delegation) that runs as a
failover pair (RFC 7031 requirements, RFC 8156 semantics over AMP on TLS).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
