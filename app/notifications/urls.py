"""Which callback URLs the service will call, so that it cannot be turned against
internal addresses (SSRF).

A URL is accepted when its scheme is http or https, it carries no credentials, its host is
on the allow-list (``UNLEARN_WEBHOOK_ALLOWED_HOSTS``; empty refuses every URL), and every
address the host resolves to is public, unless private addresses are explicitly allowed
(``UNLEARN_WEBHOOK_ALLOW_PRIVATE_ADDRESSES``). The check runs when a request is filed (a
422 naming ``callback_url``) and again before every delivery attempt, whose connection then
goes to the address just checked: a DNS answer that changes in between (rebinding) cannot
redirect the POST.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000
Resolver = Callable[[str, int], list[str]]


class CallbackRefused(ValueError):
    """The URL may not be called; the message says why."""


@dataclass(frozen=True)
class CallbackTarget:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the checked address the connection goes to


def resolve_host(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # IPv4/IPv6: a str


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry.strip("[]"):
            return True
    return False


def _address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public one, or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Most specific first: Python counts link-local and loopback as private too.
    for kind, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                       ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if flag:
            return kind
    return None if ip.is_global else "non-public"


def check_callback_url(url: str, allowed_hosts: tuple[str, ...], allow_private: bool,
                       resolver: Resolver = resolve_host) -> CallbackTarget:
    """The target to connect to, or CallbackRefused saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise CallbackRefused("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise CallbackRefused(f"is not a valid URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise CallbackRefused(f"scheme {scheme or '(none)'!r} is not allowed: use http or https")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("must not carry credentials (user:password@)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackRefused("names no host")
    if not allowed_hosts:
        raise CallbackRefused(
            "is refused: callbacks are disabled on this service (no host is allowed: "
            "UNLEARN_WEBHOOK_ALLOWED_HOSTS is empty)")
    if not host_allowed(host, allowed_hosts):
        raise CallbackRefused(
            f"host {host!r} is not on the allow-list of callback hosts "
            "(UNLEARN_WEBHOOK_ALLOWED_HOSTS)")
    port = port or (443 if scheme == "https" else 80)
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError):
        addresses = []
    if not addresses:
        raise CallbackRefused(f"host {host!r} does not resolve")
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            raise CallbackRefused(f"host {host!r} resolves to {address!r}, not an IP") from None
        kind = _address_kind(ip)
        if kind is not None and not allow_private:
            raise CallbackRefused(
                f"host {host!r} resolves to {address}, a {kind} address; callbacks to "
                "non-public addresses need UNLEARN_WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true")
    return CallbackTarget(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


def check_for_settings(url: str, settings) -> CallbackTarget:
    return check_callback_url(url, settings.webhook_hosts,
                              settings.webhook_allow_private_addresses)


def pinned_request_url(target: CallbackTarget) -> str:
    """The URL with its host replaced by the checked address (the Host header and, for
    https, the TLS server name keep the original host)."""
    parts = urlsplit(target.url)
    address = f"[{target.address}]" if ":" in target.address else target.address
    netloc = f"{address}:{target.port}"
    return parts._replace(netloc=netloc, fragment="").geturl()


def host_header(target: CallbackTarget) -> str:
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == default else f"{host}:{target.port}"


def redacted(url: str) -> str:
    """The URL without its query string and fragment (which may carry tokens): what the
    audit log and the logs show."""
    try:
        parts = urlsplit(url)
        return parts._replace(query="", fragment="").geturl()
    except ValueError:
        return "(unparseable URL)"
