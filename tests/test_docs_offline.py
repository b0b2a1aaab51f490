"""`/api/docs/` works with no internet: Swagger UI's assets come from the server itself.

Checked on a real uvicorn in production mode (DEBUG=0, as a pod runs), on a tenant host and
on the platform host: the page names no other host, and every script and stylesheet it
loads is served by the same process.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from tests.api_helpers import PLATFORM_HOST, http
from tests.conftest import LiveServer, TenantInfo

# Any absolute or scheme-relative URL in the page (attributes, inline script, style).
ABSOLUTE_URL = re.compile(r"""(?:\bhttps?:)?//[A-Za-z0-9.-]+(?::\d+)?(?=[/"'\s)?#]|$)""")


class Links(HTMLParser):
    """The URLs of a page's attributes, and those of its scripts and stylesheets."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if tag == "script" and values.get("src"):
            self.assets.append(str(values["src"]))
        if tag == "link" and values.get("href") and values.get("rel") in ("stylesheet", "icon"):
            self.assets.append(str(values["href"]))


@pytest.fixture(params=["tenant", "platform"])
def docs_host(request: pytest.FixtureRequest, tenant_a: TenantInfo) -> str:
    return tenant_a.domain if request.param == "tenant" else PLATFORM_HOST


def test_api_docs_load_every_asset_from_the_same_server(
    live_server: LiveServer, docs_host: str
) -> None:
    page_url = f"http://{docs_host}/api/docs/"
    with http(live_server, docs_host) as client:
        page = client.get("/api/docs/")
        assert page.status_code == 200, page.text
        links = Links()
        links.feed(page.text)

        assert links.assets, page.text  # Swagger UI's bundle, preset and stylesheet at least
        for url in links.urls:
            assert urlsplit(url).netloc in ("", docs_host), url
        for match in ABSOLUTE_URL.finditer(page.text):
            assert urlsplit(match.group(0)).netloc == docs_host, match.group(0)

        for asset in links.assets:
            absolute = urlsplit(urljoin(page_url, asset))
            assert absolute.netloc == docs_host, asset
            response = client.get(absolute.path, params=absolute.query or None)
            assert response.status_code == 200, (asset, response.status_code)
            assert response.content, asset
