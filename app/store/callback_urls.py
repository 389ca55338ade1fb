"""Which callback URLs the service may call: checked by the API at submission and by the worker before
each delivery, which then connects to the address it checked (pinned), never to a second resolution."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class Target:
    """A callback URL resolved once: `url` names the checked address itself; `host` goes in the Host
    header and, for https, in SNI and the certificate check."""

    url: str
    host: str


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global is False for private, loopback, link-local (169.254.169.254, the cloud metadata address),
    # carrier-grade NAT (100.64.0.0/10), reserved, documentation and unspecified ranges alike
    mapped = getattr(ip, "ipv4_mapped", None) or getattr(ip, "sixtofour", None)
    return not ip.is_global or ip.is_multicast or (mapped is not None and _not_public(mapped))


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
        return None, f"callback_url's host {parts.hostname!r} does not resolve"
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        return None, f"callback_url's host {parts.hostname!r} does not resolve"
    if not allow_private:
        for ip in addresses:
            if _not_public(ip):
                return None, (
                    f"callback_url's host {parts.hostname!r} is a private address ({ip}); use a public endpoint"
                )
    ip = addresses[0]
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host = parts.hostname if not parts.port else f"{parts.hostname}:{parts.port}"
    return Target(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host), None


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why this callback URL may not be called, or None."""
    return resolve(url, allow_private)[1]
