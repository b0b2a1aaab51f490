"""The browser client as served (`/static/chat/client.js`) and as packaged (`clients/js/`), and
the pages at `/`, on a real uvicorn in production mode (DEBUG=0, WhiteNoise's start-up index)
and once in development mode (DEBUG=1: the finders asked on each request).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from tests.api_helpers import PLATFORM_HOST, http
from tests.conftest import ROOT, LiveServer, TenantInfo

PACKAGE = ROOT / "clients" / "js"


def test_served_client_is_the_package_file_byte_for_byte(
    live_server: LiveServer, tenant_a: TenantInfo
) -> None:
    with http(live_server, tenant_a.domain) as client:
        response = client.get("/static/chat/client.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == (PACKAGE / "client.js").read_bytes()


def test_nothing_else_of_the_package_folder_is_served(
    live_server: LiveServer, tenant_a: TenantInfo
) -> None:
    with http(live_server, tenant_a.domain) as client:
        for name in (
            "package.json",
            "index.d.ts",
            "test/fakes.js",
            "node_modules/.package-lock.json",
        ):
            assert client.get(f"/static/chat/{name}").status_code == 404, name


def test_a_development_server_serves_the_same_files(
    server_factory: Callable[..., LiveServer], tenant_a: TenantInfo
) -> None:
    server = server_factory(DEBUG="1")
    with http(server, tenant_a.domain) as client:
        module = client.get("/static/chat/client.js")
        demo = client.get("/static/chat/demo/demo.js")
        package = client.get("/static/chat/package.json")
    assert module.status_code == 200
    assert module.content == (PACKAGE / "client.js").read_bytes()
    assert demo.status_code == 200 and 'from "../client.js"' in demo.text
    assert package.status_code == 404


def test_client_module_imports_nothing() -> None:
    source = (PACKAGE / "client.js").read_text()
    assert not re.search(r"^\s*import\s", source, re.MULTILINE), "the module has no dependency"
    assert "export class TenantChat" in source


def test_package_json_exports_the_module_and_its_types() -> None:
    package = json.loads((PACKAGE / "package.json").read_text())
    assert package["type"] == "module"
    assert package["exports"]["."]["import"] == "./client.js"
    assert package["exports"]["."]["types"] == "./index.d.ts"
    assert package["types"] == "./index.d.ts"
    assert not package.get("dependencies")
    for name in package["files"]:
        assert (PACKAGE / name).is_file(), name
    declarations = (PACKAGE / "index.d.ts").read_text()
    for name in ("class TenantChat", "class Room", "send(", "onMessage", "onState"):
        assert name in declarations, name
    assert "notifications(" in declarations


def test_tenant_host_root_is_the_demo_page_on_the_client(
    live_server: LiveServer, tenant_a: TenantInfo
) -> None:
    with http(live_server, tenant_a.domain) as client:
        page = client.get("/")
        script = client.get("/static/chat/demo/demo.js")
        style = client.get("/static/chat/demo/demo.css")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/chat/demo/demo.js">' in page.text
    assert not re.search(r"""(?:src|href)=["'](?:https?:)?//""", page.text), "no other host"
    assert script.status_code == 200 and style.status_code == 200
    assert 'from "../client.js"' in script.text  # the demo is built on the module alone
    assert not re.search(r"""from\s+["'](?!\.\./client\.js)""", script.text)


def test_platform_host_root_links_the_api_docs(live_server: LiveServer) -> None:
    with http(live_server, PLATFORM_HOST) as client:
        page = client.get("/")
        docs = client.get("/api/docs/")
    assert page.status_code == 200
    assert 'href="/api/docs/"' in page.text
    assert docs.status_code == 200


def test_unknown_host_root_is_404(live_server: LiveServer) -> None:
    with http(live_server, "nobody.localhost") as client:
        assert client.get("/").status_code == 404
        assert client.get("/static/chat/client.js").status_code == 404
