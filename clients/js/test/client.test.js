// Unit tests of the client's logic, with Node's own runner: `node --test clients/js/test/`.
// The WebSocket and fetch here are stand-ins that record what the client does; the real
// server is exercised by the browser tests (tests/e2e/test_browser_client.py).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { backoffDelay, MessageLog, refreshAt, SendQueue, STOP_CODES, TenantChatError } from "../client.js";
import { FakeSocket, makeChat, mock, msg, openRoom, settle, tokenPair, useFakeClock } from "./fakes.js";

useFakeClock();

describe("backoff", () => {
  test("full jitter stays within one second and thirty seconds", () => {
    for (let attempt = 0; attempt < 40; attempt += 1) {
      for (const r of [0, 0.001, 0.25, 0.5, 0.999999]) {
        const d = backoffDelay(attempt, { random: () => r });
        assert.ok(d >= 1000 && d <= 30000, `attempt ${attempt} random ${r}: ${d}`);
      }
    }
  });

  test("the ceiling doubles with each attempt until 30 s", () => {
    const top = (attempt) => backoffDelay(attempt, { random: () => 0.999999 });
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(top), [1000, 1999, 3999, 7999, 15999, 29999, 29999]);
    assert.equal(backoffDelay(3, { random: () => 0.5 }), 4000); // jitter: half of 8 s
    assert.equal(backoffDelay(3, { random: () => 0 }), 1000); // never sooner than 1 s
  });
});

describe("token refresh timing", () => {
  test("a quarter of the lifetime before expiry, at most a minute before", () => {
    const now = Date.now();
    assert.equal(refreshAt(tokenPair(900).access), now + 840_000);
    assert.equal(refreshAt(tokenPair(8).access), now + 6_000);
    assert.equal(refreshAt("not-a-jwt"), null);
  });

  test("refreshes before expiry, keeps the rotated refresh token, hands the token to every socket", async () => {
    let n = 0;
    const { chat, calls } = makeChat({
      lifetime: 8,
      routes: {
        "/api/auth/token/refresh/": ({ body }) => {
          n += 1;
          return [200, { ...tokenPair(8, "alice", n), refresh: `rotated-${n}-from-${body.refresh}` }];
        },
      },
    });
    const { ws } = await openRoom(chat);
    const notes = chat.notifications({});
    mock.timers.tick(0);
    await settle();
    const nws = FakeSocket.last();
    nws.open();
    nws.frame({ type: "pong" });

    mock.timers.tick(5_999);
    await settle();
    assert.equal(calls.filter((c) => c.path === "/api/auth/token/refresh/").length, 0);
    mock.timers.tick(1);
    await settle();
    const refreshes = calls.filter((c) => c.path === "/api/auth/token/refresh/");
    assert.equal(refreshes.length, 1);
    assert.equal(refreshes[0].body.refresh, "refresh-0");
    assert.equal(chat.tokens.refresh, "rotated-1-from-refresh-0");
    for (const socket of [ws, nws]) {
      assert.deepEqual(socket.sentOf("auth").map((f) => f.token), [chat.tokens.access]);
      socket.frame({ type: "auth.ok", exp: 0 });
    }
    // The next refresh uses the rotated token, 6 s after the new one was issued.
    mock.timers.tick(6_000);
    await settle();
    const second = calls.filter((c) => c.path === "/api/auth/token/refresh/");
    assert.equal(second.length, 2);
    assert.equal(second[1].body.refresh, "rotated-1-from-refresh-0");
    assert.equal(ws.readyState, 1, "the socket stayed open");
    notes.close();
    chat.close();
  });

  test("an auth frame left unanswered is sent again", async () => {
    const { chat } = makeChat({
      lifetime: 60,
      routes: { "/api/auth/token/refresh/": () => [200, tokenPair(60, "alice", 1)] },
    });
    const { ws } = await openRoom(chat);
    mock.timers.tick(45_000); // a quarter of 60 s before expiry
    await settle();
    assert.equal(ws.sentOf("auth").length, 1);
    ws.frame({ type: "error", code: "unavailable", detail: "database", retry_after: 2 });
    mock.timers.tick(10_000);
    assert.deepEqual(ws.sentOf("auth").map((f) => f.token), [chat.tokens.access, chat.tokens.access]);
    ws.frame({ type: "auth.ok", exp: 0 });
    mock.timers.tick(10_000);
    assert.equal(ws.sentOf("auth").length, 2);
    chat.close();
  });

  test("getToken replaces the refresh endpoint", async () => {
    let given = 0;
    const { chat, calls } = makeChat({
      lifetime: 8,
      tokens: undefined,
      getToken: async () => {
        given += 1;
        return tokenPair(8, "alice", given).access;
      },
    });
    const { ws } = await openRoom(chat);
    assert.equal(given, 1);
    mock.timers.tick(6_000);
    await settle();
    assert.equal(given, 2);
    assert.equal(ws.sentOf("auth").length, 1);
    assert.equal(calls.filter((c) => c.path.startsWith("/api/auth/")).length, 0);
    chat.close();
  });
});

describe("dedupe and order", () => {
  test("frames are released once each, in seq order, past out-of-order arrival", () => {
    const out = [];
    const log = new MessageLog((f) => out.push(f.seq));
    log.setBaseline(10);
    log.add(msg(1, 11));
    log.add(msg(3, 13)); // 12 not here yet: held
    assert.deepEqual(out, [11]);
    log.add(msg(2, 12));
    log.add(msg(3, 13)); // duplicate
    log.add(msg(1, 11)); // duplicate
    assert.deepEqual(out, [11, 12, 13]);
    assert.equal(log.contiguous, 13);
    assert.deepEqual(log.messages.map((m) => m.id), [1, 2, 3]);
  });

  test("resume.done and deletions fill holes that no message will", () => {
    const out = [];
    const log = new MessageLog((f) => out.push(f.seq));
    log.setBaseline(0);
    log.add(msg(1, 1));
    log.add(msg(4, 4)); // 2 deleted before we saw it, 3 deleted live below
    log.skip(3);
    assert.deepEqual(out, [1]);
    log.skipTo(2); // resume.done: nothing else exists up to 2
    assert.deepEqual(out, [1, 4]);
    assert.equal(log.contiguous, 4);
  });

  test("a backlog with a deleted message in it is shown whole, in order", async () => {
    const { chat } = makeChat({
      routes: {
        "/api/rooms/general/messages/": ({ query }) => {
          assert.equal(query.get("limit"), "50");
          return [200, [msg(9, 12), msg(8, 10), msg(7, 9)]]; // newest first; 11 was deleted
        },
      },
    });
    const { room, ws, received } = await openRoom(chat, { backlog: 50 });
    assert.deepEqual(received.map((f) => f.seq), [9, 10, 12]);
    assert.deepEqual(room.messages.map((f) => f.id), [7, 8, 9]);
    assert.equal(ws.url.searchParams.get("since"), "12");
    ws.frame(msg(10, 13));
    assert.deepEqual(received.map((f) => f.seq), [9, 10, 12, 13]);
    chat.close();
  });

  test("a room resumes from the last contiguous seq and shows replays once", async () => {
    const { chat } = makeChat();
    const { room, ws, received } = await openRoom(chat);
    assert.equal(ws.url.searchParams.get("since"), "40"); // the newest seq at open
    ws.frame(msg(6, 41));
    ws.frame(msg(8, 43)); // 42 on its way
    ws.drop(1006);
    mock.timers.tick(1_000);
    await settle();
    const next = FakeSocket.last();
    assert.notEqual(next, ws);
    assert.equal(next.url.searchParams.get("since"), "41");
    next.open();
    next.frame({ type: "presence", users: ["alice", "bob"] });
    next.frame(msg(7, 42));
    next.frame(msg(8, 43));
    next.frame({ type: "resume.done", seq: 43 });
    next.frame(msg(8, 43)); // a late duplicate
    assert.deepEqual(received.map((f) => f.seq), [41, 42, 43]);
    assert.deepEqual(room.messages.map((f) => f.id), [6, 7, 8]);
    chat.close();
  });
});

describe("reconnect and stop", () => {
  for (const code of [1001, 1006, 1012, 1013, 4408, 4409]) {
    test(`close ${code} reconnects with backoff`, async () => {
      const { chat } = makeChat();
      const { ws, states } = await openRoom(chat);
      ws.drop(code);
      assert.deepEqual(states.at(-1), ["reconnecting", code]);
      mock.timers.tick(999);
      await settle();
      assert.equal(FakeSocket.all.length, 1, "not sooner than a second");
      mock.timers.tick(1);
      await settle();
      assert.equal(FakeSocket.all.length, 2);
      chat.close();
    });
  }

  for (const code of [4400, 4403, 4429]) {
    test(`close ${code} stops and says why`, async () => {
      const { chat } = makeChat();
      const { room, ws, states } = await openRoom(chat);
      const pending = room.send("lost cause");
      ws.drop(code, "no");
      assert.deepEqual(states.at(-1), ["closed", code]);
      await assert.rejects(pending, (err) => err instanceof TenantChatError && err.code === "closed" && err.closeCode === code);
      mock.timers.tick(60_000);
      await settle();
      assert.equal(FakeSocket.all.length, 1);
      assert.ok(STOP_CODES.includes(code));
      chat.close();
    });
  }

  test("a silent network counts as lost: ping, then a new socket", async () => {
    const { chat } = makeChat({ pingIntervalMs: 25_000, pongTimeoutMs: 10_000 });
    const { ws, states } = await openRoom(chat);
    mock.timers.tick(25_000);
    assert.equal(ws.sentOf("ping").length, 1);
    mock.timers.tick(10_000);
    assert.deepEqual(states.at(-1), ["reconnecting", 1006]);
    mock.timers.tick(1_000);
    await settle();
    assert.equal(FakeSocket.all.length, 2);
    chat.close();
  });

  test("4401 refreshes the token once; a second 4401 after that stops", async () => {
    let refreshed = 0;
    const { chat } = makeChat({
      routes: { "/api/auth/token/refresh/": () => [200, tokenPair(900, "alice", ++refreshed)] },
    });
    const { ws, states } = await openRoom(chat);
    ws.drop(4401);
    await settle();
    assert.equal(refreshed, 1);
    mock.timers.tick(1_000);
    await settle();
    const again = FakeSocket.last();
    assert.notEqual(again, ws);
    assert.equal(again.url.searchParams.get("token"), chat.tokens.access);
    again.open();
    again.drop(4401); // refused before it was ever ready: the account is gone
    await settle();
    assert.deepEqual(states.at(-1), ["closed", 4401]);
    chat.close();
  });

  test("4401 with a refresh that fails stops", async () => {
    const { chat } = makeChat({ routes: { "/api/auth/token/refresh/": () => [401, { detail: "blacklisted" }] } });
    const { ws, states } = await openRoom(chat);
    ws.drop(4401);
    await settle();
    assert.deepEqual(states.at(-1), ["closed", 4401]);
    chat.close();
  });
});

describe("send queue", () => {
  test("one write in flight; each send resolves once with the stored frame", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const a = room.send("a");
    const b = room.send("b");
    assert.equal(ws.sentOf("message").length, 1, "b waits for a's answer");
    const [fa] = ws.sentOf("message");
    ws.frame(msg(10, 41, { client_id: fa.client_id, user: "alice", message: "a" }));
    assert.equal((await a).id, 10);
    const fb = ws.sentOf("message")[1];
    assert.equal(fb.message, "b");
    ws.frame(msg(11, 42, { client_id: fb.client_id, user: "alice", message: "b" }));
    ws.frame(msg(11, 42, { client_id: fb.client_id, user: "alice", message: "b" }));
    assert.equal((await b).id, 11);
    assert.deepEqual(room.messages.map((m) => m.id), [10, 11]);
    chat.close();
  });

  test("an unacknowledged send goes again with the same client_id after a reconnect", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const sent = room.send("during the outage");
    const first = ws.sentOf("message")[0];
    ws.drop(1001);
    const queuedWhileDown = room.send("queued while down");
    mock.timers.tick(1_000);
    await settle();
    const next = FakeSocket.last();
    next.open();
    next.frame({ type: "presence", users: ["alice"] });
    assert.equal(next.sentOf("message").length, 0, "nothing is sent before the replay is done");
    next.frame({ type: "resume.done", seq: 40 });
    const resent = next.sentOf("message");
    assert.equal(resent.length, 1);
    assert.equal(resent[0].client_id, first.client_id);
    // The server knew that client_id: it answers with the original frame, to us only.
    next.frame(msg(20, 41, { client_id: first.client_id, user: "alice" }));
    assert.equal((await sent).id, 20);
    const second = next.sentOf("message")[1];
    assert.equal(second.message, "queued while down");
    next.frame(msg(21, 42, { client_id: second.client_id, user: "alice" }));
    assert.equal((await queuedWhileDown).id, 21);
    assert.deepEqual(room.messages.map((m) => m.id), [20, 21]);
    chat.close();
  });

  test("a send the replay already holds resolves from the replay, without a resend", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const sent = room.send("stored just before the drop");
    const frame = ws.sentOf("message")[0];
    ws.drop(1006);
    mock.timers.tick(1_000);
    await settle();
    const next = FakeSocket.last();
    next.open();
    next.frame({ type: "presence", users: ["alice"] });
    next.frame(msg(30, 41, { client_id: frame.client_id, user: "alice" }));
    next.frame({ type: "resume.done", seq: 41 });
    assert.equal((await sent).id, 30);
    assert.equal(next.sentOf("message").length, 0);
    chat.close();
  });

  for (const code of ["rate_limited", "unavailable"]) {
    test(`${code} is retried after retry_after with the same client_id`, async () => {
      const { chat } = makeChat();
      const { room, ws } = await openRoom(chat);
      const sent = room.send("hi");
      ws.frame({ type: "error", code, detail: "later", retry_after: 1.5 });
      mock.timers.tick(1_499);
      assert.equal(ws.sentOf("message").length, 1);
      mock.timers.tick(1);
      const again = ws.sentOf("message");
      assert.equal(again.length, 2);
      assert.equal(again[1].client_id, again[0].client_id);
      ws.frame(msg(9, 41, { client_id: again[0].client_id, user: "alice" }));
      assert.equal((await sent).id, 9);
      chat.close();
    });
  }

  test("a send stored after all (its unavailable was a timeout) resolves once, no resend", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    let resolved = 0;
    const sent = room.send("slow database").then((f) => {
      resolved += 1;
      return f;
    });
    const [frame] = ws.sentOf("message");
    ws.frame({ type: "error", code: "unavailable", detail: "later", retry_after: 2 });
    ws.frame(msg(12, 41, { client_id: frame.client_id, user: "alice" })); // the broadcast
    assert.equal((await sent).id, 12);
    mock.timers.tick(5_000);
    await settle();
    assert.equal(ws.sentOf("message").length, 1);
    assert.equal(resolved, 1);
    chat.close();
  });

  test("other errors reject that send and let the next one go", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const bad = room.send("x".repeat(5000));
    const good = room.send("ok");
    ws.frame({ type: "error", code: "message_too_long", detail: "Too long." });
    await assert.rejects(bad, (err) => err.code === "message_too_long");
    const next = ws.sentOf("message")[1];
    assert.equal(next.message, "ok");
    ws.frame(msg(3, 41, { client_id: next.client_id, user: "alice" }));
    assert.equal((await good).id, 3);
    chat.close();
  });

  test("edit, delete and read wait their turn and resolve with their answer", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const edited = room.edit(5, "changed");
    const read = room.markRead(40);
    const readAgain = room.markRead(41); // folded into the queued read
    assert.deepEqual(ws.sent.filter((f) => f.type !== "ping").map((f) => f.type), ["edit"]);
    ws.frame({ ...msg(5, 40, { message: "changed" }), type: "chat.message.edited" });
    assert.equal((await edited).message, "changed");
    assert.deepEqual(ws.sentOf("read").map((f) => f.seq), [41]);
    ws.frame({ type: "message.read", user: "alice", seq: 41 });
    assert.equal((await read).seq, 41);
    assert.equal(await readAgain, await read);
    const deleted = room.delete(5);
    ws.frame({ type: "chat.message.deleted", id: 5, seq: 40, room: "general" });
    assert.equal((await deleted).id, 5);
    chat.close();
  });

  test("SendQueue on its own: an ack timeout resends a message, never twice at once", () => {
    const out = [];
    const q = new SendQueue({ transmit: (f) => out.push(f) > 0, ackTimeoutMs: 10_000 });
    q.setReady(true);
    q.push({ type: "message", message: "x", client_id: "c1" }, (f) => f.client_id === "c1");
    mock.timers.tick(9_999);
    assert.equal(out.length, 1);
    mock.timers.tick(1);
    assert.equal(out.length, 2);
    assert.equal(out[1].client_id, "c1");
  });
});
