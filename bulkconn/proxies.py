"""The proxy the environment names for a URL: one rule for Graph's calls and the identity calls.

Chosen as ``requests`` chooses it, with the standard library's ``urllib.request.getproxies`` and ``proxy_bypass``:
the URL's scheme's proxy (``HTTPS_PROXY``, any case), else ``ALL_PROXY``, unless ``NO_PROXY`` lists the host (by
name or suffix, or an address range holding an address host: ``10.0.0.0/8``, ``fd00::/8``, as curl reads them
since 7.86; ``requests`` takes IPv4 ranges only, the standard library none); credentials only from the proxy's own
URL (never ``~/.netrc``); a value without a scheme is ``http://``, as curl and ``requests`` read it. Reading the
environment (and on Windows and macOS the system's settings) is done once per host by the callers, not per request.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit
from urllib.request import getproxies, getproxies_environment, proxy_bypass


def with_scheme(proxy: str) -> str:
    """``proxy.corp:3128`` is ``http://proxy.corp:3128`` (curl and ``requests`` assume ``http://``; aiohttp would refuse
    the value as an invalid URL on every request)."""
    return proxy if "://" in proxy else f"http://{proxy}"


def env_proxy(url: str) -> str | None:
    """The proxy to send ``url``'s request through, or None to go direct."""
    parts = urlsplit(url)
    proxies = getproxies()  # HTTPS_PROXY, HTTP_PROXY, ALL_PROXY (any case); the system's settings elsewhere
    host = parts.hostname or ""
    if not proxies or proxy_bypass(host) or _in_listed_range(host):  # NO_PROXY
        return None
    found = proxies.get(parts.scheme) or proxies.get("all")
    return with_scheme(found) if found else None


def _in_listed_range(host: str) -> bool:
    """Whether ``host`` is an IP address inside an address range (``10.0.0.0/8``, ``fd00::/8``) that ``NO_PROXY``
    lists; names and single addresses are ``proxy_bypass``'s to match."""
    listed = getproxies_environment().get("no", "").replace(" ", "")  # "10.0.0.0 /8" too, as requests reads it
    if "/" not in listed:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name
        return False
    for entry in listed.split(","):
        if "/" not in entry:
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:  # not a range: ignored, as requests ignores it
            continue
    return False
