"""Which callback URLs the service may call: checked by the API at submission and by the worker before
each delivery."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why this callback URL may not be called, or None. Without `allow_private`, hosts that resolve to
    loopback, private or link-local addresses are refused, so a tenant cannot make the service probe
    the network it runs in (checked at submission and again before each delivery)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback_url must be an http(s) URL with a host"
    if allow_private:
        return None
    try:
        addresses = {
            info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        }
    except OSError:
        return f"callback_url's host {parts.hostname!r} does not resolve"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            return f"callback_url's host {parts.hostname!r} is a private address ({ip}); use a public endpoint"
    return None
