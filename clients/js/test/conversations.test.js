// Unit tests of the conversation features (PROTOCOL.md section 6) in the client: DMs, threads,
// reactions, search and uploads, against the stand-ins of fakes.js.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { TenantChatError } from "../client.js";
import { FakeSocket, makeChat, mock, msg, openRoom, settle, useFakeClock } from "./fakes.js";

useFakeClock();

const reaction = (id, emoji, op, counts, user = "alice") => ({
  type: "chat.reaction",
  id,
  seq: 40,
  user,
  emoji,
  op,
  counts,
});

describe("direct messages", () => {
  test("dm() posts a username or a user id and answers the DM room, which opens like any room", async () => {
    const dm = { slug: "dm-1-2", name: "alice, bob", kind: "dm", is_private: true, unread_count: 0 };
    const { chat, calls } = makeChat({
      routes: {
        "/api/dms/": () => [201, dm],
        "/api/rooms/dm-1-2/messages/": () => [200, []],
      },
    });
    assert.deepEqual(await chat.dm("bob"), dm);
    assert.deepEqual(await chat.dm(7), dm);
    await chat.dm({ user_id: 8 });
    const posts = calls.filter((c) => c.path === "/api/dms/");
    assert.deepEqual(
      posts.map((c) => c.body),
      [{ username: "bob" }, { user_id: 7 }, { user_id: 8 }],
    );
    await assert.rejects(chat.dm(undefined), TypeError);

    const room = chat.room(dm.slug);
    mock.timers.tick(0);
    await settle();
    assert.equal(new URL(FakeSocket.last().url).pathname, "/ws/chat/dm-1-2/");
    room.close();
    chat.close();
  });

  test("a refused DM rejects with the status and the field errors", async () => {
    const { chat } = makeChat({ routes: { "/api/dms/": () => [400, { username: ["No such user."] }] } });
    await assert.rejects(
      chat.dm("nobody"),
      (err) => err instanceof TenantChatError && err.status === 400 && err.body.username[0] === "No such user.",
    );
    chat.close();
  });
});

describe("threads", () => {
  test("send() with parentId and attachments puts parent_id and attachment ids in the frame", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const sent = room.send("in the thread", { parentId: 5, attachments: [{ id: 3, name: "a.png" }, 4] });
    const [frame] = ws.sentOf("message");
    assert.equal(frame.parent_id, 5);
    assert.deepEqual(frame.attachments, [3, 4]);
    assert.equal("parentId" in frame, false);
    assert.ok(frame.client_id);
    ws.frame(msg(11, 41, { client_id: frame.client_id, user: "alice", parent_id: 5 }));
    assert.equal((await sent).parent_id, 5);
    // A plain send has neither field, as before.
    room.send("top level").catch(() => {}); // left unanswered: rejected by close()
    const plain = ws.sentOf("message")[1];
    assert.equal("parent_id" in plain, false);
    assert.equal("attachments" in plain, false);
    chat.close();
  });

  test("a reply resent after a reconnect keeps its client_id and parent_id", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const sent = room.send("reply", { parentId: 5 });
    const first = ws.sentOf("message")[0];
    ws.drop(1006);
    mock.timers.tick(1_000);
    await settle();
    const next = FakeSocket.last();
    next.open();
    next.frame({ type: "presence", users: ["alice"] });
    next.frame({ type: "resume.done", seq: 40 });
    const [again] = next.sentOf("message");
    assert.equal(again.client_id, first.client_id);
    assert.equal(again.parent_id, 5);
    next.frame(msg(12, 41, { client_id: first.client_id, user: "alice", parent_id: 5 }));
    assert.equal((await sent).id, 12);
    chat.close();
  });

  test("a reply adds one to its root's reply_count, once, whatever the duplicates", async () => {
    const { chat } = makeChat();
    const { room, ws, received } = await openRoom(chat);
    ws.frame(msg(6, 41, { parent_id: null, reply_count: 0 }));
    ws.frame(msg(7, 42, { parent_id: 6 }));
    ws.frame(msg(7, 42, { parent_id: 6 })); // a duplicate
    ws.frame(msg(8, 43, { parent_id: 6 }));
    const root = room.messages.find((m) => m.id === 6);
    assert.equal(root.reply_count, 2);
    ws.drop(1006);
    mock.timers.tick(1_000);
    await settle();
    const next = FakeSocket.last();
    assert.equal(next.url.searchParams.get("since"), "43");
    next.open();
    next.frame({ type: "presence", users: ["alice"] });
    next.frame(msg(8, 43, { parent_id: 6 })); // replayed once more
    next.frame(msg(9, 44, { parent_id: 6 }));
    next.frame({ type: "resume.done", seq: 44 });
    assert.equal(root.reply_count, 3);
    // Replies are messages of the room: shown once each, in seq order.
    assert.deepEqual(received.map((f) => f.id), [6, 7, 8, 9]);
    // A deleted reply leaves the thread (the server's frame names its root, or we know it).
    next.frame({ type: "chat.message.deleted", id: 9, seq: 44, room: "general", parent_id: 6 });
    assert.equal(root.reply_count, 2);
    next.frame({ type: "chat.message.deleted", id: 8, seq: 43, room: "general" });
    assert.equal(root.reply_count, 1);
    // A reply never shown here and newer than the root's count was not in it: no change.
    next.frame({ type: "chat.message.deleted", id: 50, seq: 45, room: "general", parent_id: 6 });
    assert.equal(root.reply_count, 1);
    chat.close();
  });

  test("reply counts that history or a replay already hold are not counted again", async () => {
    const { chat } = makeChat({
      routes: {
        // Newest first: the root's count (2) already has the two replies below it.
        "/api/rooms/general/messages/": () => [
          200,
          [msg(3, 12, { parent_id: 1 }), msg(2, 11, { parent_id: 1 }), msg(1, 10, { parent_id: null, reply_count: 2 })],
        ],
      },
    });
    const { room, ws } = await openRoom(chat, { backlog: 10 });
    const root = room.messages.find((m) => m.id === 1);
    assert.equal(root.reply_count, 2);
    ws.frame(msg(4, 13, { parent_id: 1 })); // a new reply, live
    assert.equal(root.reply_count, 3);

    // A replay's root frame is built when the replay is: it counts the replies in that replay.
    ws.drop(1001);
    mock.timers.tick(1_000);
    await settle();
    const next = FakeSocket.last();
    next.open();
    next.frame({ type: "presence", users: ["alice"] });
    next.frame(msg(5, 14, { parent_id: null, reply_count: 1 }));
    next.frame(msg(6, 15, { parent_id: 5 }));
    next.frame({ type: "resume.done", seq: 15 });
    const second = room.messages.find((m) => m.id === 5);
    assert.equal(second.reply_count, 1);
    next.frame(msg(7, 16, { parent_id: 5 })); // after the replay: counted
    assert.equal(second.reply_count, 2);
    assert.equal(root.reply_count, 3);
    chat.close();
  });

  test("replies() reads a thread over REST, oldest first, with after and limit", async () => {
    const { chat, calls } = makeChat({
      routes: {
        "/api/rooms/general/messages/5/replies/": ({ query }) => [
          200,
          [msg(7, 42, { parent_id: 5 }), msg(9, 44, { parent_id: 5 })].filter((m) => m.seq > Number(query.get("after") ?? 0)),
        ],
      },
    });
    const { room } = await openRoom(chat);
    assert.deepEqual((await room.replies(5)).map((m) => m.id), [7, 9]);
    assert.deepEqual((await room.replies(5, { after: 42, limit: 10 })).map((m) => m.id), [9]);
    const asked = calls.filter((c) => c.path.endsWith("/replies/"));
    assert.deepEqual(asked.map((c) => c.query), [{}, { after: "42", limit: "10" }]);
    await assert.rejects(room.replies(99), (err) => err.status === 404);
    chat.close();
  });
});

describe("reactions", () => {
  test("react() and unreact() resolve with the chat.reaction frame answering them", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const added = room.react(5, "+1");
    const removed = room.unreact(5, "+1");
    assert.deepEqual(ws.sentOf("react"), [{ type: "react", id: 5, emoji: "+1" }]);
    assert.equal(ws.sentOf("unreact").length, 0, "one write in flight");
    // Somebody else's reaction, and another emoji of ours, answer neither.
    ws.frame(reaction(5, "+1", "add", { "+1": 1 }, "bob"));
    ws.frame(reaction(5, "tada", "add", { "+1": 1, tada: 1 }));
    ws.frame(reaction(5, "+1", "add", { "+1": 2, tada: 1 }));
    assert.deepEqual((await added).counts, { "+1": 2, tada: 1 });
    assert.deepEqual(ws.sentOf("unreact"), [{ type: "unreact", id: 5, emoji: "+1" }]);
    ws.frame(reaction(5, "+1", "remove", { "+1": 1, tada: 1 }));
    assert.equal((await removed).op, "remove");
    chat.close();
  });

  test("a chat.reaction frame updates the stored message's reactions and reaches onFrame", async () => {
    const frames = [];
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat, { onFrame: (f) => frames.push(f) });
    ws.frame(msg(6, 41, { reactions: {} }));
    ws.frame(reaction(6, "+1", "add", { "+1": 1 }, "bob"));
    ws.frame(reaction(6, "heart", "add", { "+1": 1, heart: 1 }, "carol"));
    const stored = room.messages.find((m) => m.id === 6);
    assert.deepEqual(stored.reactions, { "+1": 1, heart: 1 });
    ws.frame(reaction(6, "+1", "remove", { heart: 1 }, "bob"));
    assert.deepEqual(stored.reactions, { heart: 1 });
    assert.equal(frames.filter((f) => f.type === "chat.reaction").length, 3);
    ws.frame(reaction(99, "+1", "add", { "+1": 1 }, "bob")); // a message not shown: ignored
    assert.equal(room.messages.length, 1);
    chat.close();
  });

  test("a refused reaction rejects with the error code and lets the next write go", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const bad = room.react(404, "+1");
    const next = room.send("after it");
    ws.frame({ type: "error", code: "not_found", detail: "No such message." });
    await assert.rejects(bad, (err) => err instanceof TenantChatError && err.code === "not_found");
    const [frame] = ws.sentOf("message");
    assert.equal(frame.message, "after it");
    ws.frame(msg(3, 41, { client_id: frame.client_id, user: "alice" }));
    assert.equal((await next).id, 3);
    chat.close();
  });

  test("a rate-limited reaction goes again after retry_after; an unanswered one after the ack timeout", async () => {
    const { chat } = makeChat();
    const { room, ws } = await openRoom(chat);
    const added = room.react(5, "+1");
    ws.frame({ type: "error", code: "rate_limited", detail: "slow down", retry_after: 1 });
    mock.timers.tick(1_000);
    assert.equal(ws.sentOf("react").length, 2);
    mock.timers.tick(10_000); // no answer: a reaction is idempotent, so it is sent again
    assert.equal(ws.sentOf("react").length, 3);
    ws.frame(reaction(5, "+1", "add", { "+1": 1 })); // the no-op's answer, to us alone
    assert.equal((await added).op, "add");
    chat.close();
  });
});

describe("search", () => {
  test("search() sends q, room and limit and answers the list of frames", async () => {
    const hits = [msg(5, 40, { message: "the quarterly report" }), msg(2, 3, { room: "random", message: "report" })];
    const { chat, calls } = makeChat({ routes: { "/api/search/": () => [200, hits] } });
    assert.deepEqual(await chat.search("report"), hits);
    await chat.search("quarterly report", { room: "general", limit: 5 });
    const asked = calls.filter((c) => c.path === "/api/search/").map((c) => c.query);
    assert.deepEqual(asked, [{ q: "report" }, { q: "quarterly report", room: "general", limit: "5" }]);
    chat.close();
  });

  test("a refused search rejects with the status", async () => {
    const { chat } = makeChat({ routes: { "/api/search/": () => [400, { q: ["This field is required."] }] } });
    await assert.rejects(chat.search(""), (err) => err.status === 400 && Array.isArray(err.body.q));
    chat.close();
  });
});

describe("uploads", () => {
  test("upload() posts a multipart `file` with its name and answers the attachment", async () => {
    const attachment = { id: 3, name: "notes.txt", size: 5, content_type: "text/plain", url: "/files/3?sig=x" };
    let seen = null;
    const { chat, calls } = makeChat({
      routes: {
        "/api/rooms/general/attachments/": ({ body }) => {
          seen = body;
          return [201, attachment];
        },
      },
    });
    const { room } = await openRoom(chat);
    const answer = await room.upload(new Blob(["hello"], { type: "text/plain" }), "notes.txt");
    assert.deepEqual(answer, attachment);
    assert.ok(seen instanceof FormData);
    const file = seen.get("file");
    assert.equal(file.name, "notes.txt");
    assert.equal(await file.text(), "hello");
    const call = calls.find((c) => c.path === "/api/rooms/general/attachments/");
    assert.equal(call.headers["Content-Type"], undefined, "fetch sets the multipart boundary");
    assert.match(call.headers.Authorization, /^Bearer /);
    chat.close();
  });

  test("upload() takes a File's own name, or bytes with a name; a refusal rejects", async () => {
    const names = [];
    let status = 201;
    const { chat } = makeChat({
      routes: {
        "/api/rooms/general/attachments/": ({ body }) => {
          names.push(body.get("file").name);
          return status === 201 ? [201, { id: names.length }] : [413, { detail: "File too large." }];
        },
      },
    });
    await chat.upload("general", new File(["x"], "photo.png", { type: "image/png" }));
    await chat.upload("general", new Uint8Array([1, 2, 3]), "raw.bin");
    await chat.upload("general", new Blob(["y"]));
    assert.deepEqual(names, ["photo.png", "raw.bin", "file"]);
    status = 413;
    await assert.rejects(chat.upload("general", new Blob(["z"]), "big.bin"), (err) => err.status === 413);
    chat.close();
  });
});
