"""The proxy rule (bulkconn.proxies.env_proxy) for NO_PROXY address ranges; names, schemes and credentials are
exercised over real sockets in tests/test_transport_requests.py and tests/test_auth_http.py."""

from __future__ import annotations

import pytest

from bulkconn.proxies import env_proxy

PROXY = "http://proxy.corp:3128"
VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    return monkeypatch


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://10.1.2.3/v1.0", None),  # inside 10.0.0.0/8
        ("https://10.1.2.3:8443/v1.0", None),  # the port does not matter
        ("https://192.168.7.9/v1.0", None),  # inside 192.168.0.0/16
        ("https://[fd00::1]/v1.0", None),  # inside fd00::/8
        ("https://11.0.0.1/v1.0", PROXY),  # outside every range
        ("https://[2001:db8::1]/v1.0", PROXY),
        ("https://graph.microsoft.com/v1.0", PROXY),  # a name is never matched against ranges
        ("https://login.example.org/x", None),  # a listed suffix, as before
    ],
)
def test_no_proxy_ranges_hold_addresses_inside_them_and_only_those(
    proxied: pytest.MonkeyPatch, url: str, expected: str | None
) -> None:
    proxied.setenv("NO_PROXY", "10.0.0.0/8, 192.168.0.0/16,fd00::/8,example.org")
    assert env_proxy(url) == expected


def test_a_malformed_range_is_ignored_and_the_others_still_apply(proxied: pytest.MonkeyPatch) -> None:
    """`10.0.0.0/33` is no range (requests ignores it too): it neither breaks the rule nor bypasses anything."""
    proxied.setenv("no_proxy", "10.0.0.0/33,bogus/8,172.16.0.0 /12")  # a space inside an entry is dropped
    assert env_proxy("https://10.0.0.1/v1.0") == PROXY
    assert env_proxy("https://172.20.0.5/v1.0") is None


def test_without_a_range_the_rule_is_unchanged(proxied: pytest.MonkeyPatch) -> None:
    proxied.setenv("NO_PROXY", "10.1.2.3")
    assert env_proxy("https://10.1.2.3/v1.0") is None
    assert env_proxy("https://10.1.2.4/v1.0") == PROXY
