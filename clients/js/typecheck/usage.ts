// An app's use of the declared API (index.d.ts), compiled by `tsc --noEmit` (tsconfig.json) and
// never run: the code sits in functions nobody calls. Each `@ts-expect-error` line is a call the
// declarations must refuse; if a declaration decays to `any` the line stops failing and tsc
// reports the directive as unused.
import TenantChatDefault, {
  backoffDelay,
  decodeJwt,
  refreshAt,
  STOP_CODES,
  TenantChat,
  TenantChatError,
  type Attachment,
  type ChatMessage,
  type ConnectionState,
  type Notifications,
  type Room,
  type RoomInfo,
  type ServerFrame,
  type StateInfo,
  type Tokens,
} from "@tenantchat/client";

declare const fileInput: HTMLInputElement;

function show(...parts: unknown[]): void {
  void parts;
}

export async function app(): Promise<void> {
  const chat = new TenantChat({
    baseUrl: "http://acme.localhost:8000",
    tokens: { access: "a.b.c", refresh: "r" },
    onTokens(tokens: Tokens) {
      sessionStorage.setItem("tokens", JSON.stringify(tokens));
    },
    refreshMarginMs: 60_000,
    ackTimeoutMs: 10_000,
    pingIntervalMs: 25_000,
    pongTimeoutMs: 10_000,
    holeTimeoutMs: 2_000,
    WebSocket,
    fetch,
    random: Math.random,
  });
  const fromBackend = new TenantChatDefault({ getToken: async () => "access" });
  fromBackend.close();

  const tokens: Tokens = await chat.signIn("alice", "alice-password");
  const access: string | null = tokens.access;
  const username: string | null = chat.username;
  const baseUrl: string = chat.baseUrl;
  const fresh: string = await chat.refresh();
  const current: string = await chat.accessToken();
  chat.setTokens({ access: fresh, refresh: chat.tokens.refresh });
  show(access, username, baseUrl, current);

  const me = await chat.me();
  const admin: boolean = me.is_admin;
  const rooms: RoomInfo[] = await chat.rooms();
  const unread: number = rooms.reduce((n, r) => n + r.unread_count, 0);
  const created = await chat.createRoom({ slug: "general", name: "General", is_private: false });
  const dm: RoomInfo = await chat.dm("bob");
  await chat.dm(42);
  await chat.dm({ user_id: 42 });
  await chat.dm({ username: "bob" });
  const kind: "room" | "dm" | undefined = dm.kind;
  const counts = await chat.request<{ count: number }>("/api/rooms/", {
    method: "GET",
    query: { page: 2, q: undefined },
  });
  const total: number = counts.count;
  show(admin, unread, created.slug, kind, total);

  const states: ConnectionState[] = [];
  const room: Room = chat.room(dm.slug, {
    backlog: 50,
    since: 0,
    onMessage(frame) {
      const seq: number = frame.seq;
      const text: string = frame.message;
      const root: number | null = frame.parent_id;
      const files: Attachment[] = frame.attachments;
      const emoji: Record<string, number> = frame.reactions;
      show(seq, text, root, files, emoji, frame.reply_count ?? 0);
    },
    onFrame(frame: ServerFrame) {
      // The frames of PROTOCOL.md section 3, told apart by `type` as the demo page does.
      switch (frame.type) {
        case "presence": {
          const users: string[] = frame.users;
          show(users);
          break;
        }
        case "user.typing": {
          const who: string = frame.user;
          show(who);
          break;
        }
        case "message.read": {
          const marker: number = frame.seq;
          show(frame.user, marker);
          break;
        }
        case "chat.message.edited": {
          const edited: string | null = frame.edited_at;
          show(frame.id, edited);
          break;
        }
        case "chat.message.deleted": {
          // A deleted reply names its root, whose reply count goes down.
          const root: number | undefined = frame.parent_id;
          show(frame.id, frame.seq, root);
          break;
        }
        case "chat.reaction": {
          const op: "add" | "remove" = frame.op;
          const after: Record<string, number> = frame.counts;
          show(frame.room, frame.id, frame.emoji, op, after);
          break;
        }
        case "resume.done": {
          const upTo: number = frame.seq;
          show(upTo);
          break;
        }
        case "auth.ok": {
          const exp: number = frame.exp;
          show(exp);
          break;
        }
        case "error": {
          const wait: number | undefined = frame.retry_after;
          show(frame.code, frame.detail, wait);
          break;
        }
        default:
          break;
      }
    },
    onState(state: ConnectionState, info: StateInfo) {
      states.push(state);
      show(info.code, info.reason, info.delay);
    },
  });

  const sent: ChatMessage = await room.send("lunch?");
  await room.send("12:30?", { parentId: sent.id, client_id: crypto.randomUUID() });
  const file: Attachment = await room.upload(fileInput.files![0]);
  await room.upload("text", "notes.txt");
  await chat.upload(room.slug, new Uint8Array([1, 2]), "bytes.bin");
  await room.send("the menu", { attachments: [file, 7] });
  const edited = await room.edit(sent.id, "lunch at 1?");
  const deleted = await room.delete(edited.id);
  const read = await room.markRead(deleted.seq);
  const reaction = await room.react(sent.id, "+1");
  await room.unreact(reaction.id, "+1");
  room.typing();
  const thread: ChatMessage[] = await room.replies(sent.id, { after: 0, limit: 50 });
  const sameThread: ChatMessage[] = await chat.replies(room.slug, sent.id);
  const page: ChatMessage[] = await chat.history(room.slug, { before: read.seq, limit: 200 });
  const hits: ChatMessage[] = await chat.search("lunch", { room: room.slug, limit: 20 });
  const present: Set<string> = room.users;
  const marks: Map<string, number> = room.reads;
  const shown: readonly ChatMessage[] = room.messages;
  const state: ConnectionState = room.state;
  show(thread, sameThread, page, hits, present, marks, shown, state);

  const notifications: Notifications = chat.notifications({
    onFrame(frame) {
      if (frame.type === "mention") show(frame.room, frame.message.id);
      else if (frame.type === "room.added") show(frame.room.slug, frame.room.unread_count);
      else if (frame.type === "room.removed") show(frame.room.toUpperCase());
    },
  });
  notifications.close();

  try {
    await room.send("x".repeat(2_000_000));
  } catch (err) {
    if (err instanceof TenantChatError) {
      const code: string = err.code;
      show(code, err.detail, err.status, err.body, err.retryAfter, err.closeCode, err.frame?.code);
    }
  }
  const local = new TenantChatError("closed", "The room is closed.", { closeCode: 4403 });
  show(local.message, STOP_CODES.includes(4403));
  const delay: number = backoffDelay(3, { minMs: 1000, maxMs: 30_000, random: () => 0.5 });
  const when: number | null = refreshAt("a.b.c", 60_000);
  const claims: Record<string, unknown> | null = decodeJwt("a.b.c");
  show(delay, when, claims);

  room.close();
  await chat.signOut();
  chat.close();
}

// Calls the declarations must refuse.
export async function mistakes(chat: TenantChat, room: Room): Promise<void> {
  // @ts-expect-error: a misspelt option (baseURL for baseUrl)
  new TenantChat({ baseURL: "http://acme.localhost:8000" });
  // @ts-expect-error: send takes the text first
  await room.send({ message: "hi" });
  // @ts-expect-error: a message id is a number
  await room.edit("7", "text");
  // @ts-expect-error: react needs the emoji
  await room.react(7);
  // @ts-expect-error: a field the frame does not declare is `unknown`, not a string
  (await room.send("hi")).text.trim();
  chat.room("general", {
    onFrame(frame) {
      if (frame.type === "presence") {
        // @ts-expect-error: narrowed by `type` to a presence frame, which has `users`, no `user`
        show(frame.user);
      }
    },
  });
  // @ts-expect-error: onMessage's frame is a chat.message, whose seq is a number
  chat.room("general", { onMessage: (frame) => frame.seq.toUpperCase() });
  // @ts-expect-error: a connection state is one of four names
  const state: ConnectionState = "opened";
  // @ts-expect-error: a room keeps its slug
  room.slug = "other";
  // @ts-expect-error: signIn takes a username and a password
  await chat.signIn("alice");
  show(state);
}
