"""Numbers in query strings are ASCII digits (infra.parsers.decimal_digits): `isdigit()` is
true for superscripts and other scripts' digits too (U+00B2, U+0661, U+1D7CF), and `int()`
then failed on some (the attachment link's `exp=%C2%B2` was a 500) and read others as
digits. A link with such an `exp` is a 403, as any malformed link is (PROTOCOL section 6);
such a `since` closes the socket 4400 (section 3)."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from tests.api_helpers import http
from tests.conftest import LiveServer, TenantInfo, make_user_in, tokens_for, unique
from tests.realtime_helpers import Sockets, close_code, room_path

NOT_ASCII_DIGITS = ["\u00b2", "\u00b9\u00b2", "\u0661\u0662\u0663", "\U0001d7cf" * 10, "\uff11"]


@pytest.mark.parametrize("exp", [*NOT_ASCII_DIGITS, "+1", " 1", "1_0", ""])
def test_attachment_link_whose_exp_is_not_ascii_digits_is_403(
    live_server: LiveServer, tenant_a: TenantInfo, exp: str
) -> None:
    user = make_user_in(tenant_a)
    slug = unique("digits_")
    with http(live_server, tenant_a.domain, tokens_for(user)["access"]) as client:
        assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
        upload = client.post(
            f"/api/rooms/{slug}/attachments/", files={"file": ("a.txt", b"hi", "text/plain")}
        )
        assert upload.status_code == 201, upload.text
        link = urlsplit(upload.json()["url"])
        assert client.get(upload.json()["url"]).status_code == 200
        params = {**dict(parse_qsl(link.query)), "exp": exp}
        response = client.get(link.path, params=params)
    assert response.status_code == 403, (exp, response.status_code, response.text)


@pytest.mark.parametrize("since", NOT_ASCII_DIGITS)
async def test_since_that_is_not_ascii_digits_closes_4400(
    live_server: LiveServer, tenant_a: TenantInfo, since: str
) -> None:
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        path = room_path(unique("digits_"), tokens_for(user)["access"], quote(since))
        ws = await sockets.open(live_server, tenant_a.domain, path)
        assert await close_code(ws) == 4400
