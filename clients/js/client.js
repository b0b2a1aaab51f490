// tenantchat browser client: one dependency-free ES module (PROTOCOL.md section 7).
//
// This file is the one source: the server serves it as /static/chat/client.js (a static files
// finder, config/static.py) and the npm package is made of it. No build step: what is here is
// what browsers and `npm install` get.

const RECONNECT_MIN_MS = 1000; // "at most once a second"
const RECONNECT_MAX_MS = 30000; // "at least every 30 s"
const MAX_FRAME_BYTES = 1024 * 1024; // the server closes 1009 above this
const REPLAY_LIMIT = 1000; // a `since` replay stops there; the rest comes from REST history
const HISTORY_PAGE = 200;
// Writes the server answers the same way when they come twice (a message by its client_id, a
// reaction as a no-op): safe to send again when their answer is late.
const IDEMPOTENT_WRITES = new Set(["message", "react", "unreact"]);

// Close codes after which trying again cannot help: bad request, forbidden, too many sockets.
// 4401 is in the same set, but only after one token refresh has failed.
export const STOP_CODES = Object.freeze([4400, 4401, 4403, 4429]);

/** An error the server answered (an `error` frame or an HTTP error), or a local refusal. */
export class TenantChatError extends Error {
  constructor(code, detail, extra = {}) {
    super(detail ? `${code}: ${detail}` : String(code));
    this.name = "TenantChatError";
    this.code = code;
    this.detail = detail;
    Object.assign(this, extra);
  }
}

/**
 * Exponential backoff with full jitter, clamped to [minMs, maxMs]: a random delay in
 * [0, min(maxMs, baseMs * 2^attempt)), never below minMs. attempt 0 is the first retry.
 */
export function backoffDelay(attempt, options = {}) {
  const { minMs = RECONNECT_MIN_MS, maxMs = RECONNECT_MAX_MS, baseMs = 1000 } = options;
  const random = options.random ?? Math.random;
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.min(maxMs, Math.max(minMs, Math.floor(random() * ceiling)));
}

/** The payload of a JWT (not verified: the server does that), or null. */
export function decodeJwt(token) {
  try {
    const part = String(token).split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const text =
      typeof atob === "function" ? atob(padded) : globalThis.Buffer.from(padded, "base64").toString("binary");
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/**
 * When to refresh an access token (ms since the epoch): a quarter of its lifetime before
 * `exp`, but never more than marginMs before it. null when the token has no `exp`.
 */
export function refreshAt(token, marginMs = 60000) {
  const claims = decodeJwt(token);
  if (!claims || typeof claims.exp !== "number") return null;
  const exp = claims.exp * 1000;
  const lifetime = typeof claims.iat === "number" ? exp - claims.iat * 1000 : marginMs * 4;
  return exp - Math.min(marginMs, Math.max(lifetime / 4, 0));
}

function uuid() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = new Uint8Array(16);
  // A client_id only has to be unique among the user's sends in a room.
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(b);
  else for (let i = 0; i < 16; i += 1) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function call(fn, ...args) {
  if (typeof fn !== "function") return;
  try {
    fn(...args);
  } catch (err) {
    // An app callback that throws must not break the socket's bookkeeping.
    setTimeout(() => {
      throw err;
    });
  }
}

/**
 * Messages of one room: deduplicated by `id`, released to the app in `seq` order, and the
 * last contiguous `seq` (what `since` asks for after a reconnect).
 *
 * `seq` is gap-free per room, but deleted messages leave holes in history and replays, and
 * live frames of concurrent writers may arrive out of order. A frame past a hole is held
 * until the hole fills, `resume.done` covers it, `skipTo` is called (history repair), or
 * `chat.message.deleted` names the missing seq.
 */
export class MessageLog {
  constructor(onRelease) {
    this.onRelease = onRelease;
    this.messages = [];
    this.ids = new Set();
    this.held = new Map(); // seq -> frame, waiting for a hole below it
    this.contiguous = null; // every seq <= this has been seen (or does not exist)
  }

  /** The baseline: messages up to `seq` existed before we started (or were loaded). */
  setBaseline(seq) {
    if (this.contiguous === null || seq > this.contiguous) this.contiguous = seq;
    this.drain();
  }

  /** Adds a chat.message frame; false when its id was seen already. */
  add(frame) {
    if (this.ids.has(frame.id) || this.held.get(frame.seq)?.id === frame.id) return false;
    if (this.contiguous === null || frame.seq <= this.contiguous + 1) {
      this.release(frame);
      if (this.contiguous === null || frame.seq > this.contiguous) this.contiguous = frame.seq;
      this.drain();
    } else {
      this.held.set(frame.seq, frame);
    }
    return true;
  }

  /** A seq known to need no message (deleted): counts as seen. */
  skip(seq) {
    if (this.contiguous !== null && seq === this.contiguous + 1) {
      this.contiguous = seq;
      this.drain();
    } else if (this.contiguous !== null && seq > this.contiguous) {
      this.skipped = this.skipped ?? new Set();
      this.skipped.add(seq);
    }
  }

  /** Everything up to `seq` is known now (resume.done, a history repair): release what waits. */
  skipTo(seq) {
    if (this.contiguous === null || seq > this.contiguous) {
      for (const s of [...this.held.keys()].sort((a, b) => a - b)) {
        if (s <= seq) {
          this.release(this.held.get(s));
          this.held.delete(s);
        }
      }
      this.contiguous = seq;
    }
    this.drain();
  }

  /** The lowest held seq, or null: there is a hole below it. */
  firstHeld() {
    let low = null;
    for (const s of this.held.keys()) if (low === null || s < low) low = s;
    return low;
  }

  drain() {
    for (;;) {
      const next = this.contiguous + 1;
      if (this.held.has(next)) {
        const frame = this.held.get(next);
        this.held.delete(next);
        this.release(frame);
      } else if (this.skipped?.has(next)) {
        this.skipped.delete(next);
      } else {
        return;
      }
      this.contiguous = next;
    }
  }

  release(frame) {
    this.ids.add(frame.id);
    // Sorted insert: normally an append; a late frame below `contiguous` (a resend's answer)
    // still lands in seq order.
    let i = this.messages.length;
    while (i > 0 && this.messages[i - 1].seq > frame.seq) i -= 1;
    this.messages.splice(i, 0, frame);
    this.onRelease(frame);
  }

  /** The stored frame with this id (shown, or held behind a hole), or undefined. */
  find(id) {
    const shown = this.messages.find((m) => m.id === id);
    if (shown) return shown;
    for (const frame of this.held.values()) if (frame.id === id) return frame;
    return undefined;
  }

  edit(frame) {
    const current = this.find(frame.id);
    if (current) Object.assign(current, { ...frame, type: "chat.message" });
    return current;
  }

  /** A chat.reaction frame: its `counts` are the message's reactions now. */
  react(frame) {
    const current = this.find(frame.id);
    if (current && frame.counts && typeof frame.counts === "object") current.reactions = { ...frame.counts };
    return current;
  }

  /** Removes a deleted message; answers the removed frame, or undefined. */
  remove(id) {
    const i = this.messages.findIndex((m) => m.id === id);
    return i >= 0 ? this.messages.splice(i, 1)[0] : undefined;
  }
}

/**
 * The write frames of one socket, sent one at a time. An `error` frame names no frame, so
 * only one write may be unanswered at once for its error to be attributed: the next is sent
 * when the previous one is acknowledged (its chat.message, edited, deleted, message.read or
 * chat.reaction frame) or refused. `rate_limited` and `unavailable` keep the write at the head and send it
 * again after `retry_after`; a reconnect sends it again (a message with its same client_id,
 * which the server answers with the stored frame instead of storing it twice).
 */
export class SendQueue {
  constructor({ transmit, ackTimeoutMs = 10000 }) {
    this.transmit = transmit; // (frame) => boolean: false when the socket is not ready
    this.ackTimeoutMs = ackTimeoutMs;
    this.items = [];
    this.inflight = null;
    this.ready = false;
    this.retryTimer = null;
    this.ackTimer = null;
  }

  /** Queues a write; resolves with its acknowledgement frame, rejects with TenantChatError. */
  push(frame, matches) {
    const item = { frame, matches };
    item.promise = new Promise((resolve, reject) => {
      item.resolve = resolve;
      item.reject = reject;
    });
    this.items.push(item);
    this.pump();
    return item.promise;
  }

  /** The socket is ready (after presence / resume.done) or gone. */
  setReady(ready) {
    this.ready = ready;
    if (!ready) {
      this.inflight = null; // sent again after the reconnect
      this.clearTimers();
    }
    this.pump();
  }

  pump() {
    if (!this.ready || this.inflight || this.retryTimer || this.items.length === 0) return;
    const item = this.items[0];
    if (!this.transmit(item.frame)) return;
    this.inflight = item;
    this.ackTimer = setTimeout(() => this.ackTimedOut(item), this.ackTimeoutMs);
  }

  ackTimedOut(item) {
    this.ackTimer = null;
    if (this.inflight !== item) return;
    this.inflight = null;
    if (IDEMPOTENT_WRITES.has(item.frame.type)) {
      this.pump(); // same client_id, or a reaction the server already has: stored at most once
    } else {
      this.settle(item, null, new TenantChatError("timeout", "No answer from the server."));
    }
  }

  /** A server frame: true when it acknowledged a queued write. */
  offer(frame) {
    const item = this.items.find((it) => it.matches(frame));
    if (!item) return false;
    this.settle(item, frame, null);
    return true;
  }

  /** An `error` frame: it answers the write in flight, if any. */
  error(frame) {
    const item = this.inflight;
    if (!item) return false;
    this.inflight = null;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (frame.code === "rate_limited" || frame.code === "unavailable") {
      const wait = Math.max(0, Number(frame.retry_after) || 1) * 1000;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.pump();
      }, wait);
      return true;
    }
    this.settle(item, null, new TenantChatError(frame.code, frame.detail, { frame }));
    return true;
  }

  settle(item, frame, err) {
    const i = this.items.indexOf(item);
    if (i >= 0) this.items.splice(i, 1);
    if (this.inflight === item) {
      this.inflight = null;
      clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
    if (err) item.reject(err);
    else item.resolve(frame);
    this.pump();
  }

  /** Rejects everything queued (the socket stopped for good). */
  fail(err) {
    this.clearTimers();
    const items = this.items;
    this.items = [];
    this.inflight = null;
    for (const item of items) item.reject(err);
  }

  clearTimers() {
    clearTimeout(this.ackTimer);
    clearTimeout(this.retryTimer);
    this.ackTimer = null;
    this.retryTimer = null;
  }
}

/** What room and notification sockets share: connect, backoff, close codes, auth, heartbeat. */
class Socket {
  constructor(chat, path, options) {
    this.chat = chat;
    this.path = path;
    this.options = options;
    this.state = null;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    this.refreshedFor401 = false;
    this.lastFrameAt = 0;
    this.queue = new SendQueue({
      transmit: (frame) => this.transmit(frame),
      ackTimeoutMs: chat.options.ackTimeoutMs ?? 10000,
    });
    chat.sockets.add(this);
    // The first onState comes after the constructor returned, so a callback may already
    // refer to the object (`const room = chat.room(..., {onState() {room...}})`).
    this.state = "connecting";
    queueMicrotask(() => {
      if (this.state === "connecting") call(this.options.onState, "connecting", {});
    });
    this.connectSoon(0);
  }

  setState(state, info) {
    if (this.state === state && state !== "reconnecting") return;
    this.state = state;
    call(this.options.onState, state, info);
  }

  connectSoon(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect().catch((err) => {
        if (err?.status === 401 || err?.code === "unauthorized") {
          this.stop({ code: 4401, reason: String(err.message) }); // the refresh failed too
        } else {
          this.dropped(1006, String(err?.message ?? err)); // network, 503: try again later
        }
      });
    }, delay);
  }

  /** Anything to do before the handshake (rooms: learn where to resume); query params. */
  async prepare() {
    return {};
  }

  async connect() {
    if (this.stopped) return;
    const params = await this.prepare();
    if (this.stopped) return;
    const token = await this.chat.accessToken();
    if (this.stopped) return;
    this.tokenUsed = token;
    const url = new URL(this.path, this.chat.wsBase);
    url.searchParams.set("token", token);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
    const WS = this.chat.options.WebSocket ?? globalThis.WebSocket;
    const ws = new WS(url.toString());
    this.ws = ws;
    this.accepted = false;
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.receive(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.dropped(event.code || 1006, event.reason || "");
    };
    ws.onerror = () => {}; // a close event follows, with the code
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      this.opened();
    };
  }

  opened() {}

  /** The server accepted the socket for good (a rejection is accept + close): reset backoff. */
  ready() {
    this.attempt = 0;
    this.refreshedFor401 = false;
    // A refresh that finished while this socket was connecting: hand it the new token too.
    if (this.chat.access && this.chat.access !== this.tokenUsed) this.reauth(this.chat.access);
    this.setState("open", {});
    this.startHeartbeat();
    this.queue.setReady(true);
  }

  transmit(frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  receive(frame) {
    if (frame.type === "auth.ok") clearTimeout(this.authTimer);
    if (frame.type === "error" && this.queue.error(frame)) {
      call(this.options.onFrame, frame);
      return;
    }
    this.handle(frame);
  }

  handle(frame) {
    call(this.options.onFrame, frame);
  }

  /** Client heartbeat: a socket silent for pingIntervalMs gets a ping; no frame at all
   * within pongTimeoutMs after it means the network is gone (browsers notice late). */
  startHeartbeat() {
    const interval = this.chat.options.pingIntervalMs ?? 25000;
    const grace = this.chat.options.pongTimeoutMs ?? 10000;
    clearInterval(this.heartbeat);
    if (!interval) return;
    this.heartbeat = setInterval(() => {
      const silent = Date.now() - this.lastFrameAt;
      if (silent >= interval + grace) {
        this.abandon(1006, "no frame from the server");
      } else if (silent >= interval) {
        this.transmit({ type: "ping" });
      }
    }, Math.max(250, Math.min(interval, grace) / 2));
  }

  /** Drops the current socket without waiting for its close event (it may never come). */
  abandon(code, reason) {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    this.dropped(code, reason);
  }

  /** Hands a fresh access token to the open socket (in band: the socket stays open). */
  reauth(token) {
    clearTimeout(this.authTimer);
    if (!this.ws || this.ws.readyState !== 1) return; // the next handshake takes the new token
    this.tokenUsed = token;
    this.ws.send(JSON.stringify({ type: "auth", token }));
    // Its answer, auth.ok, can be lost to a database hiccup (answered `unavailable`): ask
    // again until it comes, while the token is still the current one.
    this.authTimer = setTimeout(() => {
      if (this.chat.access === token) this.reauth(token);
    }, this.chat.options.ackTimeoutMs ?? 10000);
  }

  dropped(code, reason) {
    clearInterval(this.heartbeat);
    clearTimeout(this.authTimer);
    this.queue.setReady(false);
    this.ws = null;
    if (this.stopped) return;
    const info = { code, reason };
    if (code === 4401 && !this.refreshedFor401 && this.chat.canRefresh()) {
      // The token ran out or was refused: one refresh, then try again.
      this.refreshedFor401 = true;
      this.setState("reconnecting", { ...info, delay: RECONNECT_MIN_MS });
      this.chat
        .refresh()
        .then(() => this.connectSoon(RECONNECT_MIN_MS))
        .catch(() => this.stop(info));
      return;
    }
    if (STOP_CODES.includes(code)) {
      this.stop(info);
      return;
    }
    const delay = backoffDelay(this.attempt, { random: this.chat.options.random });
    this.attempt += 1;
    this.setState("reconnecting", { ...info, delay });
    this.connectSoon(delay);
  }

  /** The browser is back online: try now rather than at the end of a long backoff. */
  online() {
    if (this.state === "reconnecting" && this.timer) this.connectSoon(RECONNECT_MIN_MS);
  }

  stop(info) {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.authTimer);
    clearInterval(this.heartbeat);
    this.chat.sockets.delete(this);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = null;
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    this.queue.fail(
      new TenantChatError("closed", `Socket closed (${info.code}).`, { closeCode: info.code, reason: info.reason }),
    );
    this.setState("closed", info);
  }

  close() {
    if (!this.stopped) this.stop({ code: 1000, reason: "closed by the client" });
  }
}

/** One room: `chat.room(slug, {onMessage, onFrame, onState})`. */
export class Room extends Socket {
  constructor(chat, slug, options = {}) {
    super(chat, `/ws/chat/${encodeURIComponent(slug)}/`, options);
    this.slug = slug;
    this.users = new Set();
    this.reads = new Map(); // username -> seq of their read marker
    this.awaitingResume = false;
    this.replayed = 0;
    // Threads: a top-level frame's reply_count is the server's count when it built the frame.
    // replyAsOf[id] is the room's seq up to which that count is known (null: a replay's frame,
    // known up to its resume.done); a reply past it adds one.
    this.replyAsOf = new Map();
    this.source = "live"; // where the frames being added come from: live, replay, history
    this.historyAsOf = 0;
    this.log = new MessageLog((frame) => {
      this.countReply(frame);
      call(options.onMessage, frame);
    });
    this.messages = this.log.messages;
    this.lastTypingAt = 0;
    if (typeof options.since === "number") this.log.setBaseline(options.since);
  }

  get username() {
    return this.chat.username;
  }

  /** Before the first handshake: the room's newest seq (and `backlog` messages) over REST,
   * so that nothing written between now and a later reconnect is missed. */
  async prepare() {
    if (this.log.contiguous === null) {
      const backlog = Math.max(0, Math.min(this.options.backlog ?? 0, HISTORY_PAGE));
      try {
        const page = await this.chat.history(this.slug, { limit: Math.max(backlog, 1) });
        const ordered = [...page].reverse(); // history comes newest first
        const shown = backlog ? ordered : [];
        const newest = ordered.length ? ordered[ordered.length - 1].seq : 0;
        if (shown.length) this.log.setBaseline(shown[0].seq - 1);
        this.fromHistory(newest, () => {
          for (const frame of shown) this.log.add(frame);
        });
        // History leaves deleted messages out: what a hole held back is released here.
        this.log.skipTo(newest);
      } catch (err) {
        if (err?.status !== 404) throw err; // network: retried with backoff
        this.log.setBaseline(0); // no room yet: the join creates it, empty
      }
    }
    return this.log.contiguous === null ? {} : { since: this.log.contiguous };
  }

  opened() {
    this.awaitingResume = this.log.contiguous !== null;
    this.replayed = 0;
  }

  handle(frame) {
    switch (frame.type) {
      case "chat.message":
        if (this.awaitingResume) this.replayed += 1;
        this.source = this.awaitingResume ? "replay" : "live";
        this.log.add(frame);
        this.source = "live";
        this.queue.offer(frame);
        this.watchHole();
        return;
      case "presence":
        this.users = new Set(frame.users);
        if (!this.awaitingResume) this.ready();
        break;
      case "resume.done":
        this.awaitingResume = false;
        for (const [id, asOf] of this.replyAsOf) if (asOf === null) this.replyAsOf.set(id, frame.seq);
        this.log.skipTo(frame.seq);
        if (this.replayed >= REPLAY_LIMIT) this.repair(null);
        this.ready();
        break;
      case "user.joined":
        this.users.add(frame.user);
        break;
      case "user.left":
        this.users.delete(frame.user);
        break;
      case "message.read":
        this.reads.set(frame.user, Math.max(frame.seq, this.reads.get(frame.user) ?? 0));
        this.queue.offer(frame);
        break;
      case "chat.message.edited":
        // Its reply_count and reactions are the server's as of now.
        if (this.log.edit(frame) && frame.parent_id == null && this.replyAsOf.has(frame.id)) {
          this.replyAsOf.set(frame.id, Math.max(this.replyAsOf.get(frame.id) ?? 0, this.log.contiguous ?? 0));
        }
        this.queue.offer(frame);
        break;
      case "chat.message.deleted": {
        const gone = this.log.remove(frame.id);
        // A deleted reply leaves its thread (the frame names its root; so did the reply). It
        // is in the root's count if it was shown here or is older than the root's count.
        const rootId = frame.parent_id ?? gone?.parent_id;
        const root = rootId != null ? this.log.find(rootId) : undefined;
        const counted = gone || frame.seq <= (this.replyAsOf.get(rootId) ?? -1);
        if (root && counted && root.reply_count > 0) root.reply_count -= 1;
        this.log.skip(frame.seq);
        this.queue.offer(frame);
        break;
      }
      case "chat.reaction":
        this.log.react(frame);
        this.queue.offer(frame);
        break;
      default:
        break;
    }
    call(this.options.onFrame, frame);
  }

  /** Runs `add` (which adds frames read from history) with their reply counts known up to `asOf`. */
  fromHistory(asOf, add) {
    this.source = "history";
    this.historyAsOf = Math.max(asOf ?? 0, this.log.contiguous ?? 0);
    try {
      add();
    } finally {
      this.source = "live";
    }
  }

  /** A frame released to the app: a top-level one notes how far its reply_count is known; a
   * reply past that adds one to its root's (once: the log releases each id once). */
  countReply(frame) {
    if (frame.parent_id == null) {
      if (this.source === "replay") this.replyAsOf.set(frame.id, null);
      else if (this.source === "history") this.replyAsOf.set(frame.id, this.historyAsOf);
      else this.replyAsOf.set(frame.id, Math.max(frame.seq, this.log.contiguous ?? 0));
      return;
    }
    const root = this.log.find(frame.parent_id);
    const asOf = this.replyAsOf.get(frame.parent_id);
    if (!root || asOf === undefined || asOf === null || frame.seq <= asOf) return;
    root.reply_count = (Number(root.reply_count) || 0) + 1;
  }

  /** A hole below a held frame that does not fill within holeTimeoutMs is read from history. */
  watchHole() {
    if (this.holeTimer || this.log.firstHeld() === null) return;
    this.holeTimer = setTimeout(() => {
      this.holeTimer = null;
      const held = this.log.firstHeld();
      if (held !== null && !this.stopped) this.repair(held - 1);
    }, this.chat.options.holeTimeoutMs ?? 2000);
  }

  /** Reads history after the last contiguous seq up to `upTo` (null: to the end). */
  async repair(upTo) {
    try {
      for (;;) {
        const after = this.log.contiguous ?? 0;
        if (upTo !== null && after >= upTo) break;
        const page = await this.chat.history(this.slug, { after, limit: HISTORY_PAGE });
        const last = page.length ? page[page.length - 1].seq : null;
        this.fromHistory(last, () => {
          for (const frame of page) if (upTo === null || frame.seq <= upTo) this.log.add(frame);
        });
        if (upTo !== null && (last === null || last >= upTo || page.length < HISTORY_PAGE)) {
          this.log.skipTo(upTo); // what history does not have was deleted
          break;
        }
        if (upTo === null && page.length < HISTORY_PAGE) {
          if (last !== null) this.log.skipTo(last);
          break;
        }
        if (last !== null) this.log.skipTo(last);
      }
    } catch {
      // History unreachable: the next reconnect resumes from the last contiguous seq.
    }
    this.watchHole();
  }

  /** Sends a message (a thread reply with `parentId`, with uploaded `attachments`); resolves
   * once with the stored chat.message frame. Other fields of `extra` go into the frame as they are. */
  send(message, extra = {}) {
    const { parentId, attachments, ...fields } = extra;
    const frame = { type: "message", message, client_id: fields.client_id ?? uuid(), ...fields };
    if (parentId !== undefined && parentId !== null) frame.parent_id = parentId;
    if (attachments !== undefined) {
      // Ids, or the objects upload() answered.
      frame.attachments = [...attachments].map((a) => (a && typeof a === "object" ? a.id : a));
    }
    return this.write(frame, (f) => f.type === "chat.message" && f.client_id === frame.client_id);
  }

  /** Adds the user's `emoji` to message `id`; resolves with the chat.reaction frame that answers
   * it (also when the user had reacted so already: the server answers the no-op to them alone). */
  react(id, emoji) {
    return this.reaction("react", "add", id, emoji);
  }

  /** Takes the user's `emoji` off message `id`; resolves with the chat.reaction frame. */
  unreact(id, emoji) {
    return this.reaction("unreact", "remove", id, emoji);
  }

  reaction(type, op, id, emoji) {
    const me = this.username;
    return this.write(
      { type, id, emoji },
      (f) => f.type === "chat.reaction" && f.id === id && f.emoji === emoji && f.op === op && (!me || f.user === me),
    );
  }

  /** The replies to message `id` (not the root), oldest first: `after` a seq, at most `limit`. */
  replies(id, query = {}) {
    return this.chat.replies(this.slug, id, query);
  }

  /** Uploads a File or Blob (or bytes, named `name`) to this room; resolves with the
   * attachment `{id, name, size, content_type, url}` to pass to send(text, {attachments}). */
  upload(file, name) {
    return this.chat.upload(this.slug, file, name);
  }

  /** Edits a message (author or tenant admin); resolves with the chat.message.edited frame. */
  edit(id, message) {
    return this.write({ type: "edit", id, message }, (f) => f.type === "chat.message.edited" && f.id === id);
  }

  /** Deletes a message (author or tenant admin); resolves with the chat.message.deleted frame. */
  delete(id) {
    return this.write({ type: "delete", id }, (f) => f.type === "chat.message.deleted" && f.id === id);
  }

  /** Moves the user's read marker to `seq` (never backwards); resolves with message.read. */
  markRead(seq) {
    const me = this.username;
    const pending = this.queue.items.find((it) => it.frame.type === "read" && it !== this.queue.inflight);
    if (pending) {
      // Only the highest marker matters: one queued read frame carries it.
      pending.frame.seq = Math.max(pending.frame.seq, seq);
      return pending.promise;
    }
    return this.write({ type: "read", seq }, (f) => f.type === "message.read" && (!me || f.user === me));
  }

  /** Tells the others in the room that the user is typing: at most every 3 s, dropped
   * while the socket is down (it is only a hint, and never answered). */
  typing() {
    const now = Date.now();
    if (now - this.lastTypingAt < 3000) return;
    if (this.state === "open" && this.transmit({ type: "typing" })) this.lastTypingAt = now;
  }

  write(frame, matches) {
    if (this.stopped) return Promise.reject(new TenantChatError("closed", "The room is closed."));
    if (JSON.stringify(frame).length > MAX_FRAME_BYTES) {
      return Promise.reject(new TenantChatError("frame_too_large", "Frame over 1 MiB."));
    }
    return this.queue.push(frame, matches);
  }

  stop(info) {
    clearTimeout(this.holeTimer);
    super.stop(info);
  }
}

/** The user's notifications socket: `chat.notifications({onFrame, onState})`. */
export class Notifications extends Socket {
  constructor(chat, options = {}) {
    super(chat, "/ws/notifications/", options);
  }

  opened() {
    // No `presence` here; the first answer (pong) shows the server accepted the socket.
    this.transmit({ type: "ping" });
  }

  handle(frame) {
    if (this.state !== "open" && frame.type !== "error") this.ready();
    super.handle(frame);
  }
}

/** The entry point: tokens, REST calls and the sockets of one tenant host. */
export class TenantChat {
  constructor(options = {}) {
    this.options = options;
    const origin = options.baseUrl ?? globalThis.location?.origin;
    if (!origin) throw new TypeError("TenantChat: baseUrl is required outside a browser page");
    this.baseUrl = String(origin).replace(/\/+$/, "");
    this.wsBase = this.baseUrl.replace(/^http/, "ws");
    this.sockets = new Set();
    this.access = null;
    this.refreshToken = null;
    this.refreshing = null;
    this.refreshTimer = null;
    if (options.tokens) this.setTokens(options.tokens);
    this.onOnline = () => {
      for (const s of this.sockets) s.online();
    };
    globalThis.addEventListener?.("online", this.onOnline);
  }

  /** The signed-in username (from the access token's `username` claim), or null. */
  get username() {
    return decodeJwt(this.access)?.username ?? null;
  }

  get tokens() {
    return { access: this.access, refresh: this.refreshToken };
  }

  /** `POST /api/auth/token/`; keeps and schedules the refresh of the pair. */
  async signIn(username, password) {
    const body = await this.request("/api/auth/token/", {
      method: "POST",
      body: { username, password },
      auth: false,
    });
    this.setTokens(body);
    return this.tokens;
  }

  /** Blacklists the refresh token (`POST /api/auth/logout/`) and closes every socket. */
  async signOut() {
    const refresh = this.refreshToken;
    if (refresh && this.access) {
      await this.request("/api/auth/logout/", { method: "POST", body: { refresh } }).catch(() => {});
    }
    this.close();
    this.access = this.refreshToken = null;
  }

  setTokens({ access, refresh }) {
    this.access = access ?? null;
    if (refresh) this.refreshToken = refresh;
    this.scheduleRefresh();
    call(this.options.onTokens, this.tokens);
  }

  canRefresh() {
    return Boolean(this.refreshToken || this.options.getToken);
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (this.closed || !this.access || !this.canRefresh()) return;
    const at = refreshAt(this.access, this.options.refreshMarginMs ?? 60000);
    if (at === null) return;
    const delay = Math.max(0, at - Date.now());
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh().catch(() => {
        // Try again shortly; at `exp` the sockets close 4401 and refresh once more themselves.
        const exp = (decodeJwt(this.access)?.exp ?? 0) * 1000;
        if (Date.now() < exp) this.refreshTimer = setTimeout(() => this.scheduleRefresh(), 5000);
      });
    }, Math.min(delay, 2 ** 31 - 1));
  }

  /** A fresh access token (from getToken, or the refresh endpoint, keeping the rotated
   * refresh token), handed to every open socket with an `auth` frame. One at a time. */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        let access;
        if (this.options.getToken) {
          access = await this.options.getToken();
          if (!access) throw new TenantChatError("unauthorized", "getToken gave no token.");
          this.setTokens({ access });
        } else if (this.refreshToken) {
          const body = await this.request("/api/auth/token/refresh/", {
            method: "POST",
            body: { refresh: this.refreshToken },
            auth: false,
          });
          this.setTokens(body);
          access = body.access;
        } else {
          throw new TenantChatError("unauthorized", "No refresh token and no getToken.");
        }
        for (const s of this.sockets) s.reauth(access);
        return access;
      })().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /** The access token to use now: refreshed first when it has expired (or there is none). */
  async accessToken() {
    const exp = decodeJwt(this.access)?.exp;
    if (!this.access || (typeof exp === "number" && exp * 1000 <= Date.now() + 1000)) {
      if (this.canRefresh()) return this.refresh();
      if (!this.access) throw new TenantChatError("unauthorized", "Not signed in.");
    }
    return this.access;
  }

  /** A JSON REST call on this tenant host (a FormData body goes as multipart); a 401 gets one
   * token refresh and one retry. Rejects with TenantChatError {status, body}. */
  async request(path, { method = "GET", body, query, auth = true } = {}) {
    const url = new URL(path, this.baseUrl + "/");
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    const doFetch = this.options.fetch ?? globalThis.fetch.bind(globalThis);
    // fetch sets the multipart Content-Type, boundary included, itself.
    const multipart = typeof FormData !== "undefined" && body instanceof FormData;
    const attempt = async (token) => {
      const headers = { Accept: "application/json" };
      if (body !== undefined && !multipart) headers["Content-Type"] = "application/json";
      if (token) headers.Authorization = `Bearer ${token}`;
      return doFetch(url.toString(), {
        method,
        headers,
        body: body === undefined ? undefined : multipart ? body : JSON.stringify(body),
      });
    };
    let response = await attempt(auth ? await this.accessToken() : null);
    if (response.status === 401 && auth && this.canRefresh()) {
      response = await attempt(await this.refresh());
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) {
      const detail = data && typeof data === "object" && data.detail ? data.detail : response.statusText;
      throw new TenantChatError(`http_${response.status}`, String(detail), {
        status: response.status,
        body: data,
        retryAfter: Number(response.headers?.get?.("Retry-After")) || undefined,
      });
    }
    return data;
  }

  /** `GET /api/me/`: `{id, username, is_admin}`. */
  me() {
    return this.request("/api/me/");
  }

  /** Every room the user sees (all pages of `GET /api/rooms/`), with `unread_count`. */
  async rooms() {
    const rooms = [];
    let page = 1;
    for (;;) {
      const body = await this.request("/api/rooms/", { query: { page } });
      if (Array.isArray(body)) return body;
      rooms.push(...body.results);
      if (!body.next) return rooms;
      page += 1;
    }
  }

  /** The direct-message room of the user and another (`POST /api/dms/`): a user id (number),
   * a username (string), or `{user_id}` / `{username}`. Resolves with the room object
   * (`kind: "dm"`); open it with `room(dm.slug)`. */
  dm(user) {
    let body;
    if (typeof user === "number") body = { user_id: user };
    else if (typeof user === "string") body = { username: user };
    else if (user && typeof user === "object") body = user;
    else return Promise.reject(new TypeError("dm(): a user id, a username, or {user_id} / {username}"));
    return this.request("/api/dms/", { method: "POST", body });
  }

  /** `GET /api/search/`: the messages the user can read that match `q`, best first, each a
   * chat.message frame with its `room`; `room` narrows to one room. */
  async search(q, { room, limit } = {}) {
    const body = await this.request("/api/search/", { query: { q, room, limit } });
    return Array.isArray(body) ? body : (body?.results ?? []);
  }

  /** The replies to message `id` of room `slug`, oldest first (`after` a seq, `limit`). */
  replies(slug, id, { after, limit } = {}) {
    const path = `/api/rooms/${encodeURIComponent(slug)}/messages/${encodeURIComponent(id)}/replies/`;
    return this.request(path, { query: { after, limit } });
  }

  /** Uploads a file to room `slug` (multipart field `file`): a File or Blob, or bytes / text
   * with `name`. Resolves with `{id, name, size, content_type, url}`. */
  upload(slug, file, name) {
    if (typeof FormData === "undefined" || typeof Blob === "undefined") {
      return Promise.reject(new TypeError("upload(): this runtime has no FormData / Blob"));
    }
    const blob = file instanceof Blob ? file : new Blob([file]);
    const filename = name ?? (typeof file?.name === "string" && file.name ? file.name : "file");
    const form = new FormData();
    form.append("file", blob, filename);
    return this.request(`/api/rooms/${encodeURIComponent(slug)}/attachments/`, { method: "POST", body: form });
  }

  /** `POST /api/rooms/` `{slug, name, is_private}`. */
  createRoom({ slug, name, is_private = false }) {
    return this.request("/api/rooms/", { method: "POST", body: { slug, name: name ?? slug, is_private } });
  }

  /** History: `before` (newest first) or `after` (oldest first) a seq; `limit` <= 200. */
  history(slug, { before, after, limit } = {}) {
    return this.request(`/api/rooms/${encodeURIComponent(slug)}/messages/`, { query: { before, after, limit } });
  }

  /** Opens a room socket. Options: onMessage, onFrame, onState, backlog, since. */
  room(slug, options = {}) {
    return new Room(this, slug, options);
  }

  /** Opens the user's notifications socket. Options: onFrame, onState. */
  notifications(options = {}) {
    return new Notifications(this, options);
  }

  /** Closes every socket and stops refreshing tokens. */
  close() {
    this.closed = true; // a refresh still on its way schedules no next one
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    for (const s of [...this.sockets]) s.close();
    globalThis.removeEventListener?.("online", this.onOnline);
  }
}

export default TenantChat;
