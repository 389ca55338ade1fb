"""Which callback URLs the service may call: checked by the API at submission and by the worker before
each delivery, which then connects to the address it checked (pinned), never to a second resolution."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class Target:
    """A callback URL resolved once: `urls` name each checked address itself (tried in order, as a client
    would); `host` goes in the Host header and `hostname`, for https, in SNI and the certificate check."""

    urls: tuple[str, ...]
    host: str
    hostname: str


class Unresolvable(str):
    """A problem that may pass (DNS down a moment): a delivery retries it, a submission refuses it."""


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d, deprecated but still routed by some stacks


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, where a translator or tunnel would deliver to it:
    IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96, the last 32 bits; the
    local-use 64:ff9b:1::/48 too), 6to4 (2002:a.b.c.d::/16) and Teredo (2001::/32, the client's address)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in NAT64) or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global is False for private, loopback, link-local (169.254.169.254, the cloud metadata address),
    # carrier-grade NAT (100.64.0.0/10), reserved, documentation and unspecified ranges alike; an IPv6
    # address that carries an IPv4 one is judged by that too (loopback in IPv6 clothing is loopback)
    inner = embedded_ipv4(ip) if ip.version == 6 else None
    return not ip.is_global or ip.is_multicast or (inner is not None and _not_public(inner))


def resolve(url: str, allow_private: bool) -> tuple[Target | None, str | None]:
    """(the pinned target, None), or (None, why this callback URL may not be called). Without
    `allow_private` every address the host resolves to must be public, so a tenant cannot make the
    service probe the network it runs in."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "callback_url must be an http(s) URL with a host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None, Unresolvable(f"callback_url's host {parts.hostname!r} does not resolve")
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        return None, Unresolvable(f"callback_url's host {parts.hostname!r} does not resolve")
    if not allow_private:
        for ip in addresses:
            if _not_public(ip):
                return None, (
                    f"callback_url's host {parts.hostname!r} is a private address ({ip}); use a public endpoint"
                )
    urls = []
    for ip in addresses:
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        urls.append(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")))
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    host = f"{name}:{parts.port}" if parts.port else name
    return Target(tuple(urls), host, parts.hostname), None


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why this callback URL may not be called, or None."""
    return resolve(url, allow_private)[1]
