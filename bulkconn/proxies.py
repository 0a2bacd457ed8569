"""Proxy settings from the environment, read the way curl and ``requests`` read them."""

from __future__ import annotations


def with_scheme(proxy: str) -> str:
    """``proxy.corp:3128`` is ``http://proxy.corp:3128`` (curl and ``requests`` assume ``http://``; aiohttp would refuse
    the value as an invalid URL on every request)."""
    return proxy if "://" in proxy else f"http://{proxy}"
