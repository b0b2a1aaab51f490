"""The browser client (`/static/chat/client.js`) and the demo page (`/`) in a real headless
Chromium, against a real uvicorn process, PostgreSQL and Redis.

One browser and one server for the module. The server issues access tokens that live
ACCESS_LIFETIME seconds, so every page here refreshes its token in band every few seconds;
the restart tests stop it with SIGTERM and start it again on the same port.

Needs Debian's `chromium` (`apt-get install -y chromium`) and Playwright for Python (a dev
dependency); without either the module is skipped, with the reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.api_helpers import http
from tests.conftest import (
    ROOT,
    LiveServer,
    TenantInfo,
    UserInfo,
    make_user_in,
    start_server,
    unique,
)

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - a machine without the dev dependencies
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None,
        reason="playwright for Python is not installed (a dev dependency: make install)",
    ),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)",
    ),
]

ACCESS_LIFETIME = 4  # seconds: the client refreshes at 3 s, the server closes 4401 at 4 s
ARTIFACTS = ROOT / ".artifacts"
WAIT_MS = 20_000  # generous: a restart plus the client's backoff

# Counts the page's WebSocket handshakes and the `auth` frames it sends (the module takes
# `WebSocket` from the page at each connect, so it gets this subclass).
SPY = """
window.__ws = { opened: [], auth: 0 };
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    window.__ws.opened.push(new URL(url).pathname);
  }
  send(data) {
    try { if (JSON.parse(data).type === "auth") window.__ws.auth += 1; } catch {}
    return super.send(data);
  }
};
"""


class Pod:
    """The module's uvicorn process, restartable on the same port."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        # Started on a thread: the browser launches meanwhile (the first `server` waits).
        self._starting: Future[LiveServer] | None = ThreadPoolExecutor(1).submit(self._start, None)
        self._server: LiveServer | None = None

    @property
    def server(self) -> LiveServer:
        if self._starting is not None:
            self._server, self._starting = self._starting.result(), None
        assert self._server is not None
        return self._server

    def _start(self, port: int | None) -> LiveServer:
        return start_server(
            self.tmp_dir,
            port=port,
            JWT_ACCESS_LIFETIME=str(ACCESS_LIFETIME),
            DRAIN_TIMEOUT="2",
            LOGIN_THROTTLE_RATE="1000/min",
        )

    @property
    def port(self) -> int:
        return self.server.port

    def restart(self, while_down: Callable[[], None] | None = None) -> None:
        """SIGTERM (sockets closed 1001), wait for the exit, then start again."""
        self.server.stop()
        if while_down is not None:
            while_down()
        self._server = self._start(self.server.port)


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Pod]:
    pod = Pod(tmp_path_factory.mktemp("browser"))
    yield pod
    pod.server.stop()


@pytest.fixture(scope="module")
def tenant(make_tenant: Callable[[], TenantInfo]) -> TenantInfo:
    """A tenant of this module alone: its room list holds only the rooms made here."""
    return make_tenant()


@pytest.fixture(scope="module")
def browser(pod: Pod, tenant: TenantInfo, tenant_b: TenantInfo) -> Iterator[Browser]:
    # The server boots meanwhile. The tenants before the browser: Playwright's sync API runs
    # an event loop on this thread, and Django refuses synchronous queries (the session
    # fixtures' own) once one is running.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                # `<tenant>.localhost` is loopback; the server listens on 127.0.0.1 only.
                "--host-resolver-rules=MAP *.localhost 127.0.0.1",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[list[Page]]:
    """Pages opened by the test, each in a browser context of its own (closed after)."""
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.context.close()


def open_demo(browser: Browser, pod: Pod, pages: list[Page], user: UserInfo, room: str) -> Page:
    """A new browser context on the user's tenant host: the demo page, signed in, in `room`."""
    context = browser.new_context(viewport={"width": 1100, "height": 640})
    page = context.new_page()
    pages.append(page)
    page.add_init_script(SPY)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"http://{user.tenant.domain}:{pod.port}/#{room}")
    page.fill("#sign-in input[name=username]", user.username)
    page.fill("#sign-in input[name=password]", user.password)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#state")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    expect(page.locator("#room-title")).to_have_text(f"#{room}")
    assert errors == [], errors
    return page


def send(page: Page, text: str) -> None:
    page.fill("#composer input[name=message]", text)
    page.press("#composer input[name=message]", "Enter")


def texts(page: Page) -> Any:
    return expect(page.locator("#messages li.msg .text"))


def states(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("window.tenantchatDemo.states")  # type: ignore[no-any-return]


def test_two_users_chat_both_ways_on_the_demo_page(
    browser: Browser, pod: Pod, pages: list[Page], tenant: TenantInfo
) -> None:
    alice = make_user_in(tenant, username=unique("alice"), is_admin=True)
    bob = make_user_in(tenant, username=unique("bob"))
    room = unique("lobby-")
    pa = open_demo(browser, pod, pages, alice, room)
    pb = open_demo(browser, pod, pages, bob, room)
    expect(pa.locator("#presence")).to_contain_text(bob.username)

    send(pa, "hello bob")
    texts(pb).to_have_text(["hello bob"])
    pb.type("#composer input[name=message]", "hi")  # typing frames on the way
    expect(pa.locator("#typing")).to_contain_text(f"{bob.username} is typing")
    pb.fill("#composer input[name=message]", "hi alice")
    pb.press("#composer input[name=message]", "Enter")
    for page in (pa, pb):
        texts(page).to_have_text(["hello bob", "hi alice"])
    # Read markers: each page marks what it shows as read; the other sees it.
    expect(pa.locator("#messages li.msg").last.locator(".read-by")).to_contain_text(bob.username)
    expect(pb.locator("#messages li.msg").last.locator(".read-by")).to_contain_text(alice.username)

    # Edit (alice's own message) and delete (bob's own), seen on the other page.
    pa.once("dialog", lambda dialog: dialog.accept("hello bob, edited"))
    pa.locator("#messages li.msg").first.get_by_role("button", name="edit").click()
    texts(pb).to_have_text(["hello bob, edited", "hi alice"])
    expect(pb.locator("#messages li.msg").first.locator(".edited")).to_have_text("(edited)")
    pb.locator("#messages li.msg").last.get_by_role("button", name="delete").click()
    texts(pa).to_have_text(["hello bob, edited"])

    # A public room made on one page shows on the other with its unread count.
    side = unique("side-")
    pa.fill("#create-room input[name=slug]", side)
    pa.press("#create-room input[name=slug]", "Enter")
    expect(pa.locator("#room-title")).to_have_text(f"#{side}")
    expect(pa.locator("#state")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    send(pa, "over here")
    send(pa, "bob?")
    texts(pa).to_have_text(["over here", "bob?"])
    unread = pb.locator(f'#rooms li[data-slug="{side}"] .unread')
    expect(unread).to_have_text("2", timeout=WAIT_MS)  # the list is polled every 3 s

    pa.locator(f'#rooms li[data-slug="{room}"]').click()
    texts(pa).to_have_text(["hello bob, edited"])
    expect(pa.locator("#state")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    send(pb, "back in the lobby")
    texts(pa).to_have_text(["hello bob, edited", "back in the lobby"])
    ARTIFACTS.mkdir(exist_ok=True)
    # Bob's window: presence, a read marker, an edited message, an unread count.
    pb.screenshot(path=str(ARTIFACTS / "demo-page.png"))


def test_server_restart_while_the_other_side_sends_shows_every_message_once_in_order(
    browser: Browser, pod: Pod, pages: list[Page], tenant: TenantInfo
) -> None:
    """Also: a send made on the demo page while its socket is down appears once after."""
    reader = make_user_in(tenant, username=unique("reader"))
    writer = make_user_in(tenant, username=unique("writer"))
    room = unique("restart-")
    pr = open_demo(browser, pod, pages, reader, room)
    pw = open_demo(browser, pod, pages, writer, room)
    count = 30
    # The writer sends every 100 ms without waiting for answers; the sends made while the
    # server is away wait in the client's queue.
    pw.evaluate(
        """(count) => {
          const room = window.tenantchatDemo.room;
          window.__sends = (async () => {
            const sent = [];
            for (let i = 0; i < count; i += 1) {
              sent.push(room.send(`m${i}`));
              await new Promise((r) => setTimeout(r, 100));
            }
            return Promise.all(sent);
          })();
        }""",
        count,
    )
    time.sleep(0.8)

    def send_while_down() -> None:
        expect(pr.locator("#state")).to_have_attribute("data-state", "reconnecting")
        send(pr, "sent while down")
        expect(pr.locator("#messages li.pending")).to_have_count(1)

    pod.restart(while_down=send_while_down)
    frames = pw.evaluate("window.__sends")  # every send resolved, with its stored frame
    assert [f["message"] for f in frames] == [f"m{i}" for i in range(count)]
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == count, seqs

    for page in (pr, pw):
        expect(page.locator("#messages li.msg")).to_have_count(count + 1, timeout=WAIT_MS)
    time.sleep(1)  # a late duplicate would show up here
    for page in (pr, pw):
        shown = page.locator("#messages li.msg .text").all_inner_texts()
        assert [t for t in shown if t != "sent while down"] == [f"m{i}" for i in range(count)]
        assert shown.count("sent while down") == 1
        shown_seqs = [
            int(s)
            for s in page.locator("#messages li.msg").evaluate_all(
                "els => els.map((el) => el.dataset.seq)"
            )
        ]
        assert shown_seqs == sorted(set(shown_seqs)), shown_seqs  # by seq, no duplicate
        ids = page.evaluate("window.tenantchatDemo.room.messages.map((m) => m.id)")
        assert len(ids) == len(set(ids)) == count + 1
        assert {"state": "reconnecting", "code": 1001} in states(page)
        expect(page.locator("#state")).to_have_attribute("data-state", "open")
    expect(pr.locator("#messages li.pending")).to_have_count(0)


def test_short_lived_access_token_is_refreshed_in_band_without_closing_the_socket(
    browser: Browser, pod: Pod, pages: list[Page], tenant: TenantInfo
) -> None:
    user = make_user_in(tenant, username=unique("carol"))
    room = unique("refresh-")
    page = open_demo(browser, pod, pages, user, room)
    first = page.evaluate("window.tenantchatDemo.chat.tokens")
    first_exp = page.evaluate(
        "JSON.parse(atob(window.tenantchatDemo.chat.tokens.access.split('.')[1])).exp"
    )
    # A refresh, handed to both sockets (room and notifications) with `auth`; then past
    # the first token's expiry, when the server would have closed them 4401 without it.
    page.wait_for_function("window.__ws.auth >= 2", timeout=ACCESS_LIFETIME * 2 * 1000)
    time.sleep(max(0.0, first_exp + 1 - time.time()))
    now = page.evaluate("window.tenantchatDemo.chat.tokens")
    assert now["access"] != first["access"]
    assert now["refresh"] != first["refresh"]  # rotated, and kept
    send(page, "still here")
    texts(page).to_have_text(["still here"])
    opened = page.evaluate("window.__ws.opened")
    assert sorted(opened) == sorted(["/ws/notifications/", f"/ws/chat/{room}/"]), opened
    shown = [s["state"] for s in states(page) if s["state"] != "signed-out"]
    assert shown == ["connecting", "open"], shown


def test_tenant_a_session_never_shows_tenant_b_rooms(
    browser: Browser, pod: Pod, pages: list[Page], tenant: TenantInfo, tenant_b: TenantInfo
) -> None:
    from tests.conftest import tokens_for

    b_user = make_user_in(tenant_b, username=unique("bee"))
    shared, b_only = unique("same-"), unique("b-only-")
    with http(pod.server, tenant_b.domain, tokens_for(b_user)["access"]) as client:
        for slug in (shared, b_only):
            assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
        posted = client.post(f"/api/rooms/{shared}/messages/", json={"message": "B only"})
        assert posted.status_code == 201

    a_user = make_user_in(tenant, username=unique("ant"))
    page = open_demo(browser, pod, pages, a_user, shared)
    send(page, "A only")
    texts(page).to_have_text(["A only"])
    slugs = page.locator("#rooms li").evaluate_all("els => els.map((el) => el.dataset.slug)")
    assert shared in slugs  # tenant A's own room of that name, made by the join
    assert b_only not in slugs
    assert "B only" not in page.locator("#messages").inner_text()
    access = page.evaluate("window.tenantchatDemo.chat.tokens.access")
    with http(pod.server, tenant_b.domain, access) as client:
        assert client.get("/api/rooms/").status_code == 401
        history = client.get(f"/api/rooms/{shared}/messages/")
        assert history.status_code == 401
    with http(pod.server, tenant_b.domain, tokens_for(b_user)["access"]) as client:
        messages = client.get(f"/api/rooms/{shared}/messages/").json()
        assert [m["message"] for m in messages] == ["B only"]


# --- conversations (PROTOCOL.md section 6) through the demo page ---------------------------

THUMBS_UP = "\U0001f44d"


def tiny_png() -> bytes:
    """A real 2x2 PNG (the server sniffs the type; the page shows it as a thumbnail)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xd0\x30\x30" * 2 for _ in range(2))  # filter 0, 2 RGB pixels
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def message_item(page: Page, text: str) -> Any:
    return page.locator("#messages li.msg").filter(has_text=text)


def test_thread_reply_reaction_and_dm_between_two_users_on_the_demo_page(
    browser: Browser, pod: Pod, pages: list[Page], tenant: TenantInfo
) -> None:
    alice = make_user_in(tenant, username=unique("alice"))
    bob = make_user_in(tenant, username=unique("bob"))
    room = unique("conv-")
    pa = open_demo(browser, pod, pages, alice, room)
    pb = open_demo(browser, pod, pages, bob, room)
    send(pa, "lunch at noon?")
    texts(pb).to_have_text(["lunch at noon?"])

    # Reaction: bob's thumbs-up shows on alice's page with its count; a second click takes it back.
    thumbs_up = f'button.reaction[data-emoji="{THUMBS_UP}"]'
    pb.locator("#messages li.msg").first.locator(thumbs_up).click()
    on_alice = pa.locator("#messages li.msg").first.locator(thumbs_up)
    expect(on_alice).to_have_attribute("data-count", "1")
    expect(on_alice).to_have_text(f"{THUMBS_UP} 1")
    mine = pb.locator("#messages li.msg").first.locator("button.reaction.mine")
    expect(mine).to_have_attribute("data-emoji", THUMBS_UP)
    mine.click()
    expect(on_alice).to_have_attribute("data-count", "0")
    expect(pb.locator("#messages li.msg").first.locator("button.reaction.mine")).to_have_count(0)

    # Thread: bob replies in the thread pane; alice's root counts it, her pane shows it, and
    # the main list keeps top-level messages only.
    pb.locator("#messages li.msg").first.locator("button.replies").click()
    expect(pb.locator("#thread")).to_be_visible()
    pb.fill("#thread-composer input[name=message]", "yes, 12:00")
    pb.press("#thread-composer input[name=message]", "Enter")
    expect(pb.locator("#thread-replies li .text")).to_have_text(["yes, 12:00"])
    replies_button = pa.locator("#messages li.msg").first.locator("button.replies")
    expect(replies_button).to_have_text("1 reply")
    texts(pa).to_have_text(["lunch at noon?"])
    replies_button.click()
    expect(pa.locator("#thread-root .text")).to_have_text("lunch at noon?")
    expect(pa.locator("#thread-replies li .text")).to_have_text(["yes, 12:00"])
    stored = pa.evaluate(
        "window.tenantchatDemo.room.messages.map((m) => [m.message, m.parent_id ?? null])"
    )
    root_id = pa.evaluate("window.tenantchatDemo.room.messages[0].id")
    assert stored == [["lunch at noon?", None], ["yes, 12:00", root_id]], stored
    ARTIFACTS.mkdir(exist_ok=True)
    pa.screenshot(path=str(ARTIFACTS / "demo-thread.png"))  # alice's window: the thread pane

    # DM: alice starts one by username; it is listed on bob's page with its unread count.
    pa.fill("#start-dm input[name=username]", bob.username)
    pa.press("#start-dm input[name=username]", "Enter")
    expect(pa.locator("#room-title")).to_have_text(f"@{bob.username}")
    expect(pa.locator("#state")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    send(pa, "psst, just you")
    texts(pa).to_have_text(["psst, just you"])
    dm_item = pb.locator('#dms li[data-kind="dm"]')
    expect(dm_item.locator(".name")).to_have_text(f"@{alice.username}", timeout=WAIT_MS)
    expect(dm_item.locator(".unread")).to_have_text("1", timeout=WAIT_MS)  # polled every 3 s
    dm_item.click()
    expect(pb.locator("#room-title")).to_have_text(f"@{alice.username}")
    texts(pb).to_have_text(["psst, just you"])
    dm = pa.evaluate("window.tenantchatDemo.room.slug")
    assert dm != room
    # The same DM again, not a second one.
    pa.locator(f'#rooms li[data-slug="{room}"]').click()
    pa.fill("#start-dm input[name=username]", bob.username)
    pa.press("#start-dm input[name=username]", "Enter")
    expect(pa.locator("#room-title")).to_have_text(f"@{bob.username}")
    assert pa.evaluate("window.tenantchatDemo.room.slug") == dm
    expect(pa.locator('#dms li[data-kind="dm"]')).to_have_count(1)


def test_search_and_file_upload_between_two_users_on_the_demo_page(
    browser: Browser, pod: Pod, pages: list[Page], tenant: TenantInfo
) -> None:
    alice = make_user_in(tenant, username=unique("alice"))
    bob = make_user_in(tenant, username=unique("bob"))
    room = unique("files-")
    pa = open_demo(browser, pod, pages, alice, room)
    pb = open_demo(browser, pod, pages, bob, room)

    # Upload: a text file and a picture attached to alice's next message.
    notes = b"minutes of the meeting\n"
    pa.set_input_files(
        "#composer input[type=file]",
        files=[
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": notes},
            {"name": "dot.png", "mimeType": "image/png", "buffer": tiny_png()},
        ],
    )
    expect(pa.locator("#attached .chip[data-attachment-id]")).to_have_count(2, timeout=WAIT_MS)
    send(pa, "the files")
    item = message_item(pb, "the files")
    link = item.locator(".attachments a").filter(has_text="notes.txt")
    expect(link).to_contain_text("notes.txt")
    thumb = item.locator(".attachments img.thumb")
    expect(thumb).to_have_attribute("alt", "dot.png")
    expect(pa.locator("#attached .chip")).to_have_count(0)  # they went with that message
    # Bob's links work: the file's bytes, and a picture the browser could decode.
    href = link.get_attribute("href")
    assert href
    signed = urlsplit(href)  # a signed link of this host (local storage): no token needed
    with http(pod.server, tenant.domain) as client:
        download = client.get(f"{signed.path}?{signed.query}")
    assert download.status_code == 200, download.status_code
    assert download.content == notes
    pb.wait_for_function(
        "(el) => el.complete && el.naturalWidth === 2", arg=thumb.element_handle(), timeout=WAIT_MS
    )

    # Search: bob finds alice's message from another room, and the hit takes him there.
    word = unique("zebra")
    send(pa, f"the {word} report is out")
    texts(pa).to_have_text(["the files", f"the {word} report is out"])
    pb.locator(f'#rooms li[data-slug="{room}"]').wait_for()
    side = unique("elsewhere-")
    pb.fill("#create-room input[name=slug]", side)
    pb.press("#create-room input[name=slug]", "Enter")
    expect(pb.locator("#room-title")).to_have_text(f"#{side}")
    pb.fill("#search input[name=q]", word)
    pb.press("#search input[name=q]", "Enter")
    hits = pb.locator("#search-results li")
    expect(hits).to_have_count(1, timeout=WAIT_MS)
    expect(hits.first.locator(".text")).to_have_text(f"the {word} report is out")
    expect(hits.first.locator(".where")).to_have_text(f"#{room}")
    hits.first.click()
    expect(pb.locator("#room-title")).to_have_text(f"#{room}")
    expect(pb.locator("#messages li.msg.hit .text")).to_have_text(f"the {word} report is out")
    ARTIFACTS.mkdir(exist_ok=True)
    # Bob's window: a search hit, an attachment link and a thumbnail.
    pb.screenshot(path=str(ARTIFACTS / "demo-search-and-files.png"))
