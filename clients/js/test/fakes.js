// Stand-ins shared by the unit tests: a fake clock, WebSocket and fetch, and helpers that
// play the server's side of a room's handshake. (Node's runner loads this file as a test file
// too; it holds no test.)
import { afterEach, beforeEach } from "node:test";

import { TenantChat } from "../client.js";

export const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
export function jwt(claims) {
  return `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}.sig`;
}
export function tokenPair(lifetimeS, username = "alice", n = 0) {
  const iat = Math.floor(Date.now() / 1000);
  return {
    access: jwt({ token_type: "access", iat, exp: iat + lifetimeS, username, n }),
    refresh: `refresh-${n}`,
  };
}
export const msg = (id, seq, extra = {}) => ({ type: "chat.message", id, seq, room: "general", user: "bob", message: `m${seq}`, ...extra });

/**
 * A clock of the test's own for setTimeout, setInterval and Date.now (node:test's mock.timers
 * needs Node >= 20.4, Date in it >= 20.11; this runs on any Node with node:test).
 */
export class FakeClock {
  constructor(now) {
    this.now = now;
    this.timers = new Map();
    this.nextId = 1;
  }
  install() {
    this.saved = {
      setTimeout: globalThis.setTimeout,
      clearTimeout: globalThis.clearTimeout,
      setInterval: globalThis.setInterval,
      clearInterval: globalThis.clearInterval,
      dateNow: Date.now,
    };
    globalThis.setTimeout = (fn, ms, ...args) => this.add(fn, ms, args, null);
    globalThis.setInterval = (fn, ms, ...args) => this.add(fn, ms, args, Math.max(1, Number(ms) || 0));
    globalThis.clearTimeout = globalThis.clearInterval = (id) => this.timers.delete(id);
    Date.now = () => this.now;
  }
  uninstall() {
    const { dateNow, ...timers } = this.saved;
    Object.assign(globalThis, timers);
    Date.now = dateNow;
  }
  add(fn, ms, args, every) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + Math.max(0, Number(ms) || 0), fn, args, every });
    return id;
  }
  /** Advances time by ms, running every timer due on the way, in order. */
  tick(ms) {
    const end = this.now + ms;
    for (;;) {
      let due = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (due === null || t.at < due[1].at)) due = [id, t];
      }
      if (due === null) break;
      const [id, t] = due;
      this.now = t.at;
      if (t.every) t.at += t.every;
      else this.timers.delete(id);
      t.fn(...t.args);
    }
    this.now = end;
  }
}
let clock;
export const mock = { timers: { tick: (ms) => clock.tick(ms) } };

// Lets pending promise callbacks run (the fake clock does not cover microtasks).
export async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i += 1) await Promise.resolve();
}

export class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  static last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  // --- driven by the test ---
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  frame(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }
  drop(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  sentOf(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

/** A fetch that answers from a table of handlers, recording every call. */
export function fakeFetch(routes) {
  const calls = [];
  const fetch = async (url, init) => {
    const u = new URL(url);
    // A multipart body (FormData) is recorded as it is; a JSON one parsed.
    const body = typeof init.body === "string" ? JSON.parse(init.body) : init.body;
    calls.push({ path: u.pathname, query: Object.fromEntries(u.searchParams), body, headers: init.headers });
    const handler = routes[u.pathname];
    const [status, data] = handler ? handler({ query: u.searchParams, body }) : [404, { detail: "Not found." }];
    return {
      ok: status >= 200 && status < 300,
      status,
      statusText: String(status),
      headers: { get: () => null },
      text: async () => JSON.stringify(data),
    };
  };
  return { fetch, calls };
}

export function makeChat({ lifetime = 900, routes = {}, ...options } = {}) {
  const { fetch, calls } = fakeFetch({
    "/api/rooms/general/messages/": () => [200, [msg(5, 40)]],
    ...routes,
  });
  const chat = new TenantChat({
    baseUrl: "http://acme.localhost:8000",
    tokens: tokenPair(lifetime),
    WebSocket: FakeSocket,
    fetch,
    random: () => 0.5,
    pingIntervalMs: 0,
    ...options,
  });
  return { chat, calls };
}

/** Opens a room and plays the server's side of the handshake. */
export async function openRoom(chat, options = {}) {
  const states = [];
  const received = [];
  const room = chat.room("general", {
    onMessage: (f) => received.push(f),
    onState: (s, info) => states.push([s, info.code]),
    ...options,
  });
  mock.timers.tick(0);
  await settle();
  const ws = FakeSocket.last();
  ws.open();
  ws.frame({ type: "presence", users: ["alice"] });
  ws.frame({ type: "resume.done", seq: Number(ws.url.searchParams.get("since")) });
  return { room, ws, states, received };
}

/** Each test of the calling file runs on a fresh fake clock, with no socket from before. */
export function useFakeClock() {
  beforeEach(() => {
    FakeSocket.all = [];
    clock = new FakeClock(1_764_000_000_000);
    clock.install();
  });
  afterEach(() => clock.uninstall());
}
