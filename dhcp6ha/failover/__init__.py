"""
Failover between two dhcp6ha servers (RFC 8156 semantics over AMP on TLS).
"""
