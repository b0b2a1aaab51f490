// The demo page of a tenant host: built only on the browser client (../client.js).
import { TenantChat } from "../client.js";

const $ = (selector) => document.querySelector(selector);
const STORE = "tenantchat.tokens"; // per tab (sessionStorage): alice in one window, bob in another

let chat = null;
let me = null;
let room = null;
let notifications = null;
let rooms = [];
let roomsTimer = null;
const typingUntil = new Map(); // username -> time their "typing" hint expires
const states = []; // every connection state shown, for the console (and the browser tests)
// The page's objects, for the console (and the browser tests).
window.tenantchatDemo = {
  get chat() {
    return chat;
  },
  get room() {
    return room;
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

function renderRooms() {
  const list = $("#rooms");
  list.replaceChildren();
  const slugs = new Set(rooms.map((r) => r.slug));
  if (room && !slugs.has(room.slug)) rooms.push({ slug: room.slug, name: room.slug, unread_count: 0 });
  for (const r of rooms) {
    const li = document.createElement("li");
    li.dataset.slug = r.slug;
    li.classList.toggle("active", room?.slug === r.slug);
    const name = document.createElement("span");
    name.textContent = `#${r.slug}${r.is_private ? " (private)" : ""}`;
    const unread = document.createElement("span");
    unread.className = "unread";
    // The open room is read as it is shown; the list's count may lag it by a poll.
    unread.textContent = room?.slug === r.slug || !r.unread_count ? "" : String(r.unread_count);
    li.append(name, unread);
    li.addEventListener("click", () => openRoom(r.slug));
    list.append(li);
  }
}

function openRoom(slug) {
  if (room?.slug === slug) return;
  room?.close();
  $("#messages").replaceChildren();
  $("#room-title").textContent = `#${slug}`;
  $("#presence").textContent = "";
  $("#send-error").textContent = "";
  typingUntil.clear();
  location.hash = slug;
  const current = chat.room(slug, {
    backlog: 50,
    onMessage(frame) {
      if (room !== current) return;
      renderMessage(frame);
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
      renderMessage(frame);
      break;
    case "chat.message.deleted":
      document.querySelector(`#messages li[data-id="${frame.id}"]`)?.remove();
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
  li.dataset.user = frame.user;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = frame.user;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = frame.message;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = new Date(frame.created_at).toLocaleTimeString();
  li.replaceChildren(who, text, when);
  if (frame.edited_at) {
    const edited = document.createElement("span");
    edited.className = "edited";
    edited.textContent = "(edited)";
    li.append(edited);
  }
  if (frame.user === me.username || me.is_admin) {
    li.append(button("edit", () => editMessage(frame.id)), button("delete", () => room.delete(frame.id).catch(showSendError)));
  }
  const readBy = document.createElement("span");
  readBy.className = "read-by";
  li.append(readBy);
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

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = event.target.elements.message;
  const text = input.value;
  if (!text.trim() || !room) return;
  input.value = "";
  $("#send-error").textContent = "";
  const clientId = crypto.randomUUID();
  const pending = document.createElement("li");
  pending.className = "pending";
  pending.dataset.clientId = clientId;
  pending.textContent = `${me.username}: ${text} (sending…)`;
  $("#messages").append(pending);
  room.send(text, { client_id: clientId }).then(
    () => pending.remove(),
    (err) => {
      pending.remove();
      showSendError(err);
    },
  );
});

$("#composer").elements.message.addEventListener("input", () => room?.typing());

const saved = sessionStorage.getItem(STORE);
if (saved) start(JSON.parse(saved));
else showSignedIn(false);
