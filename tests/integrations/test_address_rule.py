"""The address rule of PROTOCOL section 5: where a webhook may point, address by address, and
the 400 naming `url` at save time for each kind of refused target."""

from __future__ import annotations

import pytest

from integrations import webhooks
from tests.api_helpers import assert_field_error
from tests.conftest import LiveServer, TenantInfo
from tests.integrations.test_integration import admin_client

REFUSED = [
    # IPv4: loopback, private, link-local, shared (CGNAT), unspecified, multicast, reserved
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",  # noqa: S104
    "0.1.2.3",
    "192.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6: loopback, unspecified, link-local (with and without a zone), unique-local,
    # site-local, multicast, documentation, discard
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456:789a::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "100::1",
    # IPv6 that embeds a refused IPv4: mapped, NAT64, 6to4; local-use NAT64; Teredo; compatible
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::a00:1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::6440:1",
    "64:ff9b:1::808:808",
    "2002:a00:1::",
    "2002:7f00:1::1",
    "2002:c0a8:101::",
    "2002:6440:1::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "::a00:1",
    # not an address at all
    "not-an-address",
    "",
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.128.0.1",  # just past the shared range
    "172.32.0.1",  # just past 172.16/12
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of a public address (an IPv6-only network's DNS64 answer)
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str, settings: object) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False  # type: ignore[attr-defined]
    assert webhooks.address_refused(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str, settings: object) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False  # type: ignore[attr-defined]
    assert not webhooks.address_refused(address)


def test_the_development_switch_allows_everything_that_parses(settings: object) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True  # type: ignore[attr-defined]
    assert not webhooks.address_refused("127.0.0.1")
    assert not webhooks.address_refused("64:ff9b::a00:1")


SAVE_REFUSED = [
    "http://[64:ff9b::a00:1]/hook",
    "http://[2002:a00:1::]/hook",
    "http://100.64.0.1/hook",
    "http://[fd00::1]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number: the resolver's answer is judged
    "https://hook.example.com/a\x01b",  # the HTTP client refuses it: never attemptable
    "https://hook.example.com/a\x7fb",
]


def test_refused_targets_are_a_400_naming_url(
    live_server: LiveServer, tenant_x: TenantInfo
) -> None:
    with admin_client(live_server, tenant_x) as c:
        for url in SAVE_REFUSED:
            answer = c.post("/api/webhooks/", json={"url": url, "events": ["*"]})
            assert_field_error(answer, "url")
        made = c.post("/api/webhooks/", json={"url": "http://8.8.8.8/hook", "events": ["*"]})
        assert made.status_code == 201, made.text
        for url in SAVE_REFUSED[:3]:
            answer = c.patch(f"/api/webhooks/{made.json()['id']}/", json={"url": url})
            assert_field_error(answer, "url")
        assert c.delete(f"/api/webhooks/{made.json()['id']}/").status_code == 204
