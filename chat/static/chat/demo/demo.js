// The demo page of a tenant host: built only on the browser client (../client.js).
import { TenantChat } from "../client.js";

const $ = (selector) => document.querySelector(selector);
const STORE = "tenantchat.tokens"; // per tab (sessionStorage): alice in one window, bob in another
// The reactions the page offers (any other emoji a message has is shown too).
const EMOJI = ["\u{1F44D}", "\u{2764}\u{FE0F}", "\u{1F602}", "\u{1F389}"];

let chat = null;
let me = null;
let room = null;
let notifications = null;
let rooms = [];
let roomsTimer = null;
const typingUntil = new Map(); // username -> time their "typing" hint expires
const mine = new Map(); // message id -> Set of the emoji this user reacted with (seen on this page)
let threadRoot = null; // id of the message whose thread is open
let attached = []; // uploads waiting for the next message: {id, name, ...}
let uploading = []; // their promises, still on the way
const parentOf = new Map(); // reply id -> its root's id (a deleted reply's root shows one fewer)
let highlight = null; // id of a search hit to point at once its room shows it
const states = []; // every connection state shown, for the console (and the browser tests)
// The page's objects, for the console (and the browser tests).
window.tenantchatDemo = {
  get chat() {
    return chat;
  },
  get room() {
    return room;
  },
  get threadRoot() {
    return threadRoot;
  },
  states,
};

function setState(state, info = {}) {
  states.push({ state, code: info.code ?? null });
  const el = $("#state");
  el.dataset.state = state;
  el.dataset.code = info.code ?? "";
  const why = info.code ? ` (${info.code}${info.reason ? ` ${info.reason}` : ""})` : "";
  el.textContent = state === "reconnecting" ? `reconnecting${why}` : `${state}${state === "closed" ? why : ""}`;
}

function showSignedIn(signedIn) {
  $("#sign-in").hidden = signedIn;
  $("#app").hidden = !signedIn;
  $("#sign-out").hidden = !signedIn;
  if (!signedIn) setState("signed-out");
}

async function start(tokens) {
  chat = new TenantChat({
    tokens,
    onTokens: (t) => sessionStorage.setItem(STORE, JSON.stringify(t)),
  });
  try {
    me = await chat.me();
  } catch (err) {
    sessionStorage.removeItem(STORE);
    chat.close();
    chat = null;
    showSignedIn(false);
    if (err.status !== 401) $("#sign-in-error").textContent = err.message;
    return;
  }
  $("#whoami").textContent = `${me.username}${me.is_admin ? " (admin)" : ""}`;
  showSignedIn(true);
  notifications = chat.notifications({
    onFrame(frame) {
      if (frame.type === "room.added" || frame.type === "room.removed") loadRooms();
    },
  });
  await loadRooms();
  // `#<slug>` opens that room (joining a missing room creates it, public).
  openRoom(decodeURIComponent(location.hash.slice(1)) || "general");
  roomsTimer = setInterval(loadRooms, 3000); // unread counts of the other rooms
}

async function loadRooms() {
  if (!chat) return;
  try {
    rooms = await chat.rooms();
  } catch {
    return; // shown again at the next tick
  }
  renderRooms();
}

/** A room's label: `#slug`, or `@other` for a DM (its name is both usernames). */
function roomLabel(r) {
  if (r.kind !== "dm") return `#${r.slug}${r.is_private ? " (private)" : ""}`;
  const others = String(r.name ?? "")
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n && n !== me?.username);
  return `@${others.join(", ") || r.name}`;
}

function renderRooms() {
  $("#rooms").replaceChildren();
  $("#dms").replaceChildren();
  const slugs = new Set(rooms.map((r) => r.slug));
  if (room && !slugs.has(room.slug)) rooms.push({ slug: room.slug, name: room.slug, unread_count: 0 });
  for (const r of rooms) {
    const li = document.createElement("li");
    li.dataset.slug = r.slug;
    li.dataset.kind = r.kind ?? "room";
    li.classList.toggle("active", room?.slug === r.slug);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = roomLabel(r);
    const unread = document.createElement("span");
    unread.className = "unread";
    // The open room is read as it is shown; the list's count may lag it by a poll.
    unread.textContent = room?.slug === r.slug || !r.unread_count ? "" : String(r.unread_count);
    li.append(name, unread);
    li.addEventListener("click", () => openRoom(r.slug));
    (r.kind === "dm" ? $("#dms") : $("#rooms")).append(li);
  }
}

function openRoom(slug) {
  if (room?.slug === slug) return;
  room?.close();
  $("#messages").replaceChildren();
  const known = rooms.find((r) => r.slug === slug);
  $("#room-title").textContent = known ? roomLabel(known).replace(/ \(private\)$/, "") : `#${slug}`;
  $("#presence").textContent = "";
  $("#send-error").textContent = "";
  typingUntil.clear();
  mine.clear();
  parentOf.clear();
  closeThread();
  clearAttached();
  location.hash = slug;
  const current = chat.room(slug, {
    backlog: 50,
    onMessage(frame) {
      if (room !== current) return;
      if (frame.parent_id != null) {
        parentOf.set(frame.id, frame.parent_id);
        // A reply: into the thread pane if its thread is open; its root shows the new count.
        if (threadRoot === frame.parent_id) renderReply(frame);
        rerender(frame.parent_id);
      } else {
        renderMessage(frame);
      }
      typingUntil.delete(frame.user);
      renderTyping();
      markReadSoon();
    },
    onFrame(frame) {
      if (room !== current) return;
      onRoomFrame(frame);
    },
    onState(state, info) {
      if (room === current || room === null) setState(state, info);
    },
  });
  room = current;
  renderRooms();
}

function onRoomFrame(frame) {
  switch (frame.type) {
    case "presence":
    case "user.joined":
    case "user.left":
      $("#presence").textContent = `online: ${[...room.users].sort().join(", ")}`;
      break;
    case "user.typing":
      typingUntil.set(frame.user, Date.now() + 4000);
      renderTyping();
      setTimeout(renderTyping, 4100);
      break;
    case "message.read":
      renderReadMarkers();
      break;
    case "chat.message.edited":
      rerender(frame.id);
      break;
    case "chat.message.deleted":
      for (const el of document.querySelectorAll(`li[data-id="${frame.id}"]`)) el.remove();
      if (threadRoot === frame.id) closeThread();
      if (frame.parent_id != null || parentOf.has(frame.id)) {
        rerender(frame.parent_id ?? parentOf.get(frame.id)); // its root's reply count
      }
      break;
    case "chat.reaction":
      if (frame.user === me.username) {
        const set = mine.get(frame.id) ?? new Set();
        if (frame.op === "add") set.add(frame.emoji);
        else set.delete(frame.emoji);
        mine.set(frame.id, set);
      }
      rerender(frame.id);
      break;
    case "error":
      $("#send-error").textContent = `${frame.code}: ${frame.detail}`;
      break;
    default:
      break;
  }
}

function renderTyping() {
  const now = Date.now();
  const who = [...typingUntil].filter(([u, until]) => until > now && u !== me.username).map(([u]) => u);
  $("#typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

/** Shows a message again from the room's copy (edits, reactions, reply counts applied). */
function rerender(id) {
  const frame = room?.messages.find((m) => m.id === id);
  if (!frame) return;
  if (frame.parent_id != null) {
    if (threadRoot === frame.parent_id) renderReply(frame);
  } else {
    renderMessage(frame);
    if (threadRoot === id) renderThreadRoot();
  }
}

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

/** The inside of a message's <li>: who, text, when, attachments, reactions, actions. */
function fillMessage(li, frame, { thread = false } = {}) {
  li.dataset.user = frame.user;
  li.replaceChildren(
    span("who", frame.user),
    span("text", frame.message),
    span("when", new Date(frame.created_at).toLocaleTimeString()),
  );
  if (frame.edited_at) li.append(span("edited", "(edited)"));
  if (frame.user === me.username || me.is_admin) {
    li.append(button("edit", () => editMessage(frame.id)), button("delete", () => room.delete(frame.id).catch(showSendError)));
  }
  if (!thread && frame.parent_id == null) {
    const count = Number(frame.reply_count) || 0;
    const open = button(count ? `${count} ${count === 1 ? "reply" : "replies"}` : "reply", () => openThread(frame.id));
    open.classList.add("replies");
    li.append(open);
  }
  li.append(reactionsOf(frame), attachmentsOf(frame));
}

function attachmentsOf(frame) {
  const box = document.createElement("div");
  box.className = "attachments";
  for (const a of frame.attachments ?? []) {
    const link = document.createElement("a");
    link.href = a.url;
    link.target = "_blank";
    link.rel = "noopener";
    link.dataset.attachmentId = a.id;
    if (String(a.content_type).startsWith("image/")) {
      const img = document.createElement("img");
      img.className = "thumb";
      img.src = a.url;
      img.alt = a.name;
      link.append(img);
    } else {
      link.textContent = `${a.name} (${formatSize(a.size)})`;
    }
    box.append(link);
  }
  return box;
}

function formatSize(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The fixed emoji as toggles with their counts, then any other emoji the message has. */
function reactionsOf(frame) {
  const box = document.createElement("div");
  box.className = "reactions";
  const counts = frame.reactions ?? {};
  const shown = [...EMOJI, ...Object.keys(counts).filter((e) => !EMOJI.includes(e) && counts[e] > 0)];
  for (const emoji of shown) {
    const count = counts[emoji] ?? 0;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "reaction";
    b.dataset.emoji = emoji;
    b.dataset.count = String(count);
    const reacted = mine.get(frame.id)?.has(emoji) ?? false;
    b.classList.toggle("mine", reacted);
    b.setAttribute("aria-pressed", String(reacted));
    b.title = reacted ? "take your reaction back" : "react";
    b.textContent = count ? `${emoji} ${count}` : emoji;
    b.addEventListener("click", () => {
      const write = reacted ? room.unreact(frame.id, emoji) : room.react(frame.id, emoji);
      write.catch(showSendError);
    });
    box.append(b);
  }
  return box;
}

function renderMessage(frame) {
  const list = $("#messages");
  // A send shown while it waited for the server is replaced by the stored frame.
  if (frame.client_id) list.querySelector(`li.pending[data-client-id="${CSS.escape(frame.client_id)}"]`)?.remove();
  let li = list.querySelector(`li[data-id="${frame.id}"]`);
  const fresh = !li;
  if (fresh) {
    li = document.createElement("li");
    li.className = "msg";
    li.dataset.id = frame.id;
    li.dataset.seq = frame.seq;
  }
  fillMessage(li, frame);
  li.append(span("read-by", ""));
  if (frame.id === highlight) markHighlight(li);
  if (fresh) {
    // In seq order, before any pending sends.
    const after = [...list.querySelectorAll("li.msg")].find((el) => Number(el.dataset.seq) > frame.seq);
    const pending = list.querySelector("li.pending");
    list.insertBefore(li, after ?? pending ?? null);
    list.scrollTop = list.scrollHeight;
  }
  renderReadMarkers();
}

function renderReadMarkers() {
  // "read by bob" on the newest message each other user has read.
  const items = [...document.querySelectorAll("#messages li.msg")];
  for (const el of items) el.querySelector(".read-by").textContent = "";
  const by = new Map();
  for (const [user, seq] of room.reads) {
    if (user === me.username) continue;
    const last = items.filter((el) => Number(el.dataset.seq) <= seq).pop();
    if (last) by.set(last, [...(by.get(last) ?? []), user]);
  }
  for (const [el, users] of by) el.querySelector(".read-by").textContent = `read by ${users.join(", ")}`;
}

// --- threads ----------------------------------------------------------------------------

async function openThread(id) {
  threadRoot = id;
  $("#thread").hidden = false;
  $("#app").classList.add("with-thread");
  $("#thread-error").textContent = "";
  $("#thread-replies").replaceChildren();
  renderThreadRoot();
  // Replies the room has shown, and older ones from the thread's own history.
  for (const m of room.messages) if (m.parent_id === id) renderReply(m);
  const current = room;
  try {
    for (let after = 0; ; ) {
      const page = await current.replies(id, { after, limit: 200 });
      if (room !== current || threadRoot !== id) return;
      for (const m of page) renderReply(room.messages.find((x) => x.id === m.id) ?? m);
      if (page.length < 200) break;
      after = page[page.length - 1].seq;
    }
  } catch (err) {
    if (threadRoot === id) $("#thread-error").textContent = err.message;
  }
  $("#thread-composer").elements.message.focus();
}

function closeThread() {
  threadRoot = null;
  $("#thread").hidden = true;
  $("#app").classList.remove("with-thread");
  $("#thread-root").replaceChildren();
  $("#thread-replies").replaceChildren();
}

function renderThreadRoot() {
  const frame = room?.messages.find((m) => m.id === threadRoot);
  const box = $("#thread-root");
  if (!frame) {
    box.textContent = "";
    return;
  }
  const li = document.createElement("div");
  li.className = "msg root";
  li.dataset.id = frame.id;
  fillMessage(li, frame, { thread: true });
  box.replaceChildren(li);
}

function renderReply(frame) {
  const list = $("#thread-replies");
  let li = list.querySelector(`li[data-id="${frame.id}"]`);
  const fresh = !li;
  if (fresh) {
    li = document.createElement("li");
    li.className = "msg reply";
    li.dataset.id = frame.id;
    li.dataset.seq = frame.seq;
  }
  fillMessage(li, frame, { thread: true });
  if (fresh) {
    const after = [...list.querySelectorAll("li.reply")].find((el) => Number(el.dataset.seq) > frame.seq);
    list.insertBefore(li, after ?? null);
    list.scrollTop = list.scrollHeight;
  }
}

// --- attachments ------------------------------------------------------------------------

function clearAttached() {
  attached = [];
  uploading = [];
  renderAttached();
}

function renderAttached() {
  const box = $("#attached");
  box.replaceChildren();
  for (const a of attached) {
    const chip = span("chip", a.name);
    chip.dataset.attachmentId = a.id;
    chip.append(
      button("remove", () => {
        attached = attached.filter((x) => x !== a);
        renderAttached();
      }),
    );
    box.append(chip);
  }
  if (uploading.length) box.append(span("chip uploading", `uploading ${uploading.length}…`));
}

function uploadFiles(files) {
  const current = room;
  for (const file of files) {
    const job = current.upload(file).then(
      (attachment) => {
        if (room === current) attached.push(attachment);
      },
      (err) => {
        if (room === current) showSendError(err);
      },
    );
    uploading.push(job);
    job.finally(() => {
      uploading = uploading.filter((j) => j !== job);
      if (room === current) renderAttached();
    });
  }
  renderAttached();
}

// --- search -----------------------------------------------------------------------------

function markHighlight(li = document.querySelector(`#messages li[data-id="${highlight}"]`)) {
  if (!li) return;
  highlight = null;
  for (const el of document.querySelectorAll("#messages li.hit")) el.classList.remove("hit");
  li.classList.add("hit");
  setTimeout(() => li.scrollIntoView({ block: "center" }), 0);
}

async function search(q) {
  const list = $("#search-results");
  $("#search-panel").hidden = false;
  list.replaceChildren(span("hint", "searching…"));
  let hits;
  try {
    hits = await chat.search(q, { limit: 20 });
  } catch (err) {
    list.replaceChildren(span("error", err.message));
    return;
  }
  list.replaceChildren();
  if (!hits.length) list.append(span("hint", "no match"));
  for (const hit of hits) {
    const li = document.createElement("li");
    li.dataset.room = hit.room;
    li.dataset.id = hit.id;
    const where = rooms.find((r) => r.slug === hit.room);
    li.append(span("where", where ? roomLabel(where) : `#${hit.room}`), span("who", hit.user), span("text", hit.message));
    li.addEventListener("click", () => {
      // The room, with the message (a reply: its thread's root) marked once it is shown.
      highlight = hit.parent_id ?? hit.id;
      if (room?.slug === hit.room) markHighlight();
      else openRoom(hit.room);
    });
    list.append(li);
  }
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "link";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function editMessage(id) {
  const current = room.messages.find((m) => m.id === id);
  const text = prompt("Edit message", current?.message ?? "");
  if (text !== null && text.trim()) room.edit(id, text).catch(showSendError);
}

let readTimer = null;
function markReadSoon() {
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    const last = room?.messages[room.messages.length - 1];
    if (last && document.visibilityState === "visible") room.markRead(last.seq).catch(() => {});
  }, 300);
}
document.addEventListener("visibilitychange", markReadSoon);

/** crypto.randomUUID exists only on secure origins (https, localhost); a plain-http host has
 * getRandomValues still. A client_id is any string of 1 to 64 characters. */
function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function showSendError(err) {
  $("#send-error").textContent = err.message;
}

$("#sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $("#sign-in-error").textContent = "";
  const probe = new TenantChat();
  try {
    const tokens = await probe.signIn(form.get("username"), form.get("password"));
    sessionStorage.setItem(STORE, JSON.stringify(tokens));
    probe.close();
    await start(tokens);
  } catch (err) {
    probe.close();
    $("#sign-in-error").textContent = err.status === 401 ? "Wrong username or password." : err.message;
  }
});

$("#sign-out").addEventListener("click", async () => {
  clearInterval(roomsTimer);
  room = null;
  notifications = null;
  sessionStorage.removeItem(STORE);
  await chat?.signOut();
  chat = null;
  showSignedIn(false);
});

$("#create-room").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = event.target.elements.slug;
  $("#room-error").textContent = "";
  try {
    const created = await chat.createRoom({ slug: input.value.trim() });
    input.value = "";
    await loadRooms();
    openRoom(created.slug);
  } catch (err) {
    const fields = err.body && typeof err.body === "object" ? Object.values(err.body).flat().join(" ") : "";
    $("#room-error").textContent = fields || err.message;
  }
});

$("#composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = event.target.elements.message;
  if (!room) return;
  const current = room;
  // Uploads still on the way go with this message.
  if (uploading.length) await Promise.all(uploading);
  if (room !== current) return;
  const files = attached;
  const text = input.value;
  if (!text.trim() && !files.length) return; // a message with files may have no text
  input.value = "";
  clearAttached();
  $("#send-error").textContent = "";
  const clientId = newClientId();
  const pending = document.createElement("li");
  pending.className = "pending";
  pending.dataset.clientId = clientId;
  pending.textContent = `${me.username}: ${text || files.map((a) => a.name).join(", ")} (sending…)`;
  $("#messages").append(pending);
  room.send(text, { client_id: clientId, attachments: files.length ? files : undefined }).then(
    () => pending.remove(),
    (err) => {
      pending.remove();
      showSendError(err);
    },
  );
});

$("#composer").elements.file.addEventListener("change", (event) => {
  if (room && event.target.files.length) uploadFiles([...event.target.files]);
  event.target.value = ""; // the same file may be picked again
});

$("#thread-composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = event.target.elements.message;
  const text = input.value;
  if (!text.trim() || !room || threadRoot === null) return;
  input.value = "";
  $("#thread-error").textContent = "";
  room.send(text, { parentId: threadRoot }).catch((err) => {
    $("#thread-error").textContent = err.message;
  });
});
$("#thread-composer").elements.message.addEventListener("input", () => room?.typing());
$("#thread-close").addEventListener("click", closeThread);

$("#start-dm").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = event.target.elements.username;
  $("#dm-error").textContent = "";
  try {
    const dm = await chat.dm(input.value.trim());
    input.value = "";
    if (!rooms.some((r) => r.slug === dm.slug)) rooms.push(dm);
    openRoom(dm.slug);
    loadRooms();
  } catch (err) {
    const fields = err.body && typeof err.body === "object" ? Object.values(err.body).flat().join(" ") : "";
    $("#dm-error").textContent = fields || err.message;
  }
});

$("#search").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = event.target.elements.q.value.trim();
  if (q && chat) search(q);
});
$("#search-close").addEventListener("click", () => {
  $("#search-panel").hidden = true;
  $("#search-results").replaceChildren();
});

$("#composer").elements.message.addEventListener("input", () => room?.typing());

const saved = sessionStorage.getItem(STORE);
if (saved) start(JSON.parse(saved));
else showSignedIn(false);
