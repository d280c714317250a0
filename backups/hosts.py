"""Which database servers a tenant's server sources may name.

Staff give each tenant its rules (Tenant.server_hosts), like its file roots; a tenant
without rules of its own gets settings.SOURCE_ALLOWED_HOSTS. A rule is an IP address,
a network (10.0.5.0/24, fd00::/8), a host name, or "*" (anything); tenants/rules.py
checks their form when staff save them.

A source's host is allowed when every address it resolves to lies in a rule's
network or is an address a host-name rule resolves to. The form checks it when the
source is saved, and the engines again right before each connection, passing the
checked address to the tool, so a host name that resolves elsewhere later (DNS
rebinding) reaches nothing the rules do not allow. Without rules a source could point
"Test connection" and backups at any address and port the workers reach: a port
scanner inside the operator's network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from django.conf import settings

from backups.errors import BackupError, ErrorCode
from tenants.models import Tenant
from tenants.rules import ANY

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def rules_for(tenant: Tenant) -> list[str]:
    return list(tenant.server_hosts or settings.SOURCE_ALLOWED_HOSTS)


def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (an address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[Address] = []
    for info in infos:
        address = _plain(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        if address not in found:
            found.append(address)
    return found


def _plain(address: Address) -> Address:
    # ::ffff:10.0.0.1 is 10.0.0.1 on the wire; an IPv4 rule must see it as such.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _allowed_networks(rules: Iterable[str], port: int) -> list[Network] | None:
    """The rules as networks (host names resolved now); None when "*" allows anything."""
    networks: list[Network] = []
    for rule in rules:
        if rule == ANY:
            return None
        try:
            networks.append(ipaddress.ip_network(rule, strict=False))
        except ValueError:
            networks += [ipaddress.ip_network(address) for address in resolve(rule, port)]
    return networks


def checked_addresses(host: str, port: int, tenant: Tenant) -> list[str]:
    """The addresses to connect to for `host`, all allowed by the tenant's rules; else
    BackupError (PERMISSION_DENIED, or CONNECTION_FAILED when the name does not resolve)."""
    networks = _allowed_networks(rules_for(tenant), port)
    addresses = resolve(host, port)
    if not addresses:
        raise BackupError(ErrorCode.CONNECTION_FAILED, f"The host name “{host}” does not resolve to an address.")
    if networks is not None:
        for address in addresses:
            if not any(address in network for network in networks):
                raise BackupError(ErrorCode.PERMISSION_DENIED, not_allowed_message(host, tenant))
    return [str(address) for address in addresses]


def not_allowed_message(host: str, tenant: Tenant) -> str:
    return (
        f"“{host}” is not among the database servers this tenant may use ({', '.join(rules_for(tenant))});"
        " an administrator sets them."
    )
