// Type declarations of the tenantchat browser client (client.js). Hand-written: keep them in
// step with client.js and README.md; `make js-types` compiles them against typecheck/usage.ts.

/** `{access, refresh}` as `POST /api/auth/token/` and `/api/auth/token/refresh/` answer. */
export interface Tokens {
  access: string | null;
  refresh?: string | null;
}

/** An uploaded file (`POST /api/rooms/<slug>/attachments/` answers one). `url` is a signed link
 * that expires after ATTACHMENT_URL_TTL seconds; a local one is root-relative: `new URL(url, baseUrl)`. */
export interface Attachment {
  id: number;
  name: string;
  size: number;
  content_type: string;
  url: string;
}

/** The fields of a `chat.message` and of a `chat.message.edited` frame. (Not `Omit<ChatMessage,
 * "type">`: Omit over the index signature would keep only the signature, every field `unknown`.) */
export interface ChatMessageFields {
  id: number;
  seq: number;
  room: string;
  user: string;
  message: string;
  client_id: string | null;
  created_at: string;
  edited_at: string | null;
  /** The thread's root for a reply, null for a top-level message. */
  parent_id: number | null;
  /** Top-level messages: how many live replies; kept current in `room.messages`. */
  reply_count?: number;
  /** emoji -> count; kept current in `room.messages`. */
  reactions: Record<string, number>;
  /** Files attached to the message; `[]` when none. */
  attachments: Attachment[];
  [extra: string]: unknown;
}

/** A `chat.message` frame (PROTOCOL.md sections 3 and 6); also each item of REST history,
 * of replies() and of search(). */
export interface ChatMessage extends ChatMessageFields {
  type: "chat.message";
}
export interface ChatMessageEdited extends ChatMessageFields {
  type: "chat.message.edited";
}
export interface ChatMessageDeleted {
  type: "chat.message.deleted";
  id: number;
  seq: number;
  room: string;
  /** A deleted reply names its root, whose `reply_count` goes one down. */
  parent_id?: number;
}
export interface MessageRead {
  type: "message.read";
  user: string;
  seq: number;
}
/** The room's answer to a react / unreact (the sender alone gets it for a no-op). */
export interface ChatReaction {
  type: "chat.reaction";
  /** The message's id, seq and room. */
  id: number;
  seq: number;
  room: string;
  user: string;
  emoji: string;
  op: "add" | "remove";
  /** The message's reactions after the change: emoji -> count. */
  counts: Record<string, number>;
}
export interface ErrorFrame {
  type: "error";
  code: string;
  detail: string;
  retry_after?: number;
}

/** Every server frame other than `chat.message` (room and notification sockets), told apart by
 * `type`. A closed union: a member `{type: string}` for frame types added later would match every
 * `type` test and leave each narrowed frame's fields `unknown`; such frames do reach `onFrame`,
 * so a `switch` on `type` keeps a `default`. */
export type ServerFrame =
  | { type: "presence"; users: string[] }
  | { type: "user.joined" | "user.left" | "user.typing"; user: string }
  | MessageRead
  | ChatMessageEdited
  | ChatMessageDeleted
  | ChatReaction
  | { type: "resume.done"; seq: number }
  | { type: "ping" | "pong" }
  | { type: "auth.ok"; exp: number }
  | ErrorFrame
  | { type: "mention"; room: string; message: ChatMessage }
  | { type: "room.added"; room: RoomInfo }
  | { type: "room.removed"; room: string };

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface StateInfo {
  /** The close code that caused "reconnecting" or "closed" (1000 after close()). */
  code?: number;
  reason?: string;
  /** "reconnecting" only: milliseconds until the next attempt. */
  delay?: number;
}

export interface SocketOptions {
  /** Every server frame other than chat.message (room sockets), every frame (notifications). */
  onFrame?(frame: ServerFrame): void;
  onState?(state: ConnectionState, info: StateInfo): void;
}

export interface RoomOptions extends SocketOptions {
  /** Each chat.message once, in seq order, across reconnects. */
  onMessage?(frame: ChatMessage): void;
  /** Load this many newest messages (REST, at most 200) before the socket opens. Default 0. */
  backlog?: number;
  /** Replay from this seq on the first connect (instead of starting at the newest message). */
  since?: number;
}

export interface TenantChatOptions {
  /** The tenant host, e.g. "http://acme.localhost:8000". Default: the page's origin. */
  baseUrl?: string;
  /** An access/refresh pair obtained elsewhere. */
  tokens?: Tokens;
  /** The app's own source of access tokens (instead of the refresh endpoint). */
  getToken?(): Promise<string>;
  /** Called with the pair after sign-in and after every refresh (to persist it). */
  onTokens?(tokens: Tokens): void;
  /** Refresh this long before expiry, at most (default 60000; a quarter of the lifetime if less). */
  refreshMarginMs?: number;
  /** A write not answered within this is sent again (messages) or rejected (default 10000). */
  ackTimeoutMs?: number;
  /** Ping a socket silent for this long (default 25000; 0: never). */
  pingIntervalMs?: number;
  /** No frame this long after that ping: the connection is treated as lost (default 10000). */
  pongTimeoutMs?: number;
  /** A hole in seq that does not fill within this is read from history (default 2000). */
  holeTimeoutMs?: number;
  /** Stand-ins (tests, non-browser runtimes). Default: the global ones. */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
  random?(): number;
}

/** A room object of `GET /api/rooms/` and `POST /api/dms/`. */
export interface RoomInfo {
  slug: string;
  /** A DM's is the two usernames, e.g. "alice, bob". */
  name: string;
  is_private: boolean;
  /** "dm": a direct-message room of two users. */
  kind?: "room" | "dm";
  created_at: string;
  unread_count: number;
  [extra: string]: unknown;
}

export interface SendOptions {
  client_id?: string;
  /** A thread reply: the root's id (a reply to a reply is attached to the root). */
  parentId?: number;
  /** The user's own uploads in this room: ids or the objects upload() answered. */
  attachments?: Array<number | Pick<Attachment, "id">>;
  /** Any other field goes into the `message` frame as it is. */
  [field: string]: unknown;
}

export declare class TenantChatError extends Error {
  /** The message is `"<code>: <detail>"`; the fields of `extra` are copied onto the error. */
  constructor(
    code: string,
    detail?: string,
    extra?: Partial<Pick<TenantChatError, "status" | "body" | "retryAfter" | "closeCode" | "reason" | "frame">>,
  );
  /** The error frame's code, "http_<status>", "closed", "timeout", "frame_too_large" or
   * "unauthorized" (no token to be had). */
  code: string;
  detail?: string;
  /** REST errors: the status and the parsed body. */
  status?: number;
  body?: unknown;
  retryAfter?: number;
  /** "closed": the close code and reason that stopped the socket. */
  closeCode?: number;
  reason?: string;
  frame?: ErrorFrame;
}

declare class Socket {
  readonly state: ConnectionState;
  close(): void;
}

export declare class Room extends Socket {
  /** What `chat.room(slug, options)` does. */
  constructor(chat: TenantChat, slug: string, options?: RoomOptions);
  readonly slug: string;
  /** The chat.message frames shown since the room opened (replays included), by seq, no
   * duplicates; edits are applied in place and deleted messages removed. */
  readonly messages: ChatMessage[];
  /** Who is in the room now (presence, user.joined, user.left). */
  readonly users: Set<string>;
  /** Read markers seen: username -> seq. */
  readonly reads: Map<string, number>;
  /** Resolves once with the stored chat.message frame, even across reconnects. */
  send(message: string, extra?: SendOptions): Promise<ChatMessage>;
  edit(id: number, message: string): Promise<ChatMessageEdited>;
  delete(id: number): Promise<ChatMessageDeleted>;
  markRead(seq: number): Promise<MessageRead>;
  typing(): void;
  /** Resolve with the chat.reaction frame answering them (also for a no-op); reject on an error frame. */
  react(id: number, emoji: string): Promise<ChatReaction>;
  unreact(id: number, emoji: string): Promise<ChatReaction>;
  /** The replies to message `id` (not the root), oldest first. */
  replies(id: number, query?: { after?: number; limit?: number }): Promise<ChatMessage[]>;
  /** Uploads to this room; pass the answer (or its id) to send(text, {attachments}). */
  upload(file: Blob | ArrayBuffer | ArrayBufferView | string, name?: string): Promise<Attachment>;
}

export declare class Notifications extends Socket {
  /** What `chat.notifications(options)` does. */
  constructor(chat: TenantChat, options?: SocketOptions);
}

export declare class TenantChat {
  constructor(options?: TenantChatOptions);
  readonly baseUrl: string;
  readonly tokens: Tokens;
  /** From the access token's `username` claim. */
  readonly username: string | null;
  signIn(username: string, password: string): Promise<Tokens>;
  signOut(): Promise<void>;
  setTokens(tokens: Tokens): void;
  refresh(): Promise<string>;
  accessToken(): Promise<string>;
  request<T = unknown>(
    path: string,
    /** A FormData body goes as multipart, anything else as JSON. */
    init?: { method?: string; body?: unknown; query?: Record<string, string | number | undefined>; auth?: boolean },
  ): Promise<T>;
  me(): Promise<{ id: number; username: string; is_admin: boolean }>;
  rooms(): Promise<RoomInfo[]>;
  createRoom(room: { slug: string; name?: string; is_private?: boolean }): Promise<RoomInfo>;
  /** The DM room with a user (id or username); open it with room(dm.slug). */
  dm(user: number | string | { user_id: number } | { username: string }): Promise<RoomInfo>;
  /** Messages the user can read that match, best first, each with its `room`. */
  search(q: string, options?: { room?: string; limit?: number }): Promise<ChatMessage[]>;
  replies(slug: string, id: number, query?: { after?: number; limit?: number }): Promise<ChatMessage[]>;
  upload(slug: string, file: Blob | ArrayBuffer | ArrayBufferView | string, name?: string): Promise<Attachment>;
  history(slug: string, query?: { before?: number; after?: number; limit?: number }): Promise<ChatMessage[]>;
  room(slug: string, options?: RoomOptions): Room;
  notifications(options?: SocketOptions): Notifications;
  close(): void;
}

/** Close codes after which the client stops (4401 only after one failed refresh). */
export declare const STOP_CODES: readonly number[];
/** Exponential backoff with full jitter in [minMs, maxMs] (default 1000 and 30000). */
export declare function backoffDelay(
  attempt: number,
  options?: { minMs?: number; maxMs?: number; baseMs?: number; random?(): number },
): number;
/** When to refresh a token, ms since the epoch (null without exp). */
export declare function refreshAt(token: string, marginMs?: number): number | null;
export declare function decodeJwt(token: string): Record<string, unknown> | null;

export default TenantChat;

/** Internals, exported for the unit tests; not a stable API. */
export declare class MessageLog {
  constructor(onRelease: (frame: ChatMessage) => void);
  messages: ChatMessage[];
  contiguous: number | null;
  setBaseline(seq: number): void;
  add(frame: ChatMessage): boolean;
  skip(seq: number): void;
  skipTo(seq: number): void;
}
export declare class SendQueue {
  constructor(options: { transmit(frame: object): boolean; ackTimeoutMs?: number });
  push<T>(frame: object, matches: (frame: ServerFrame | ChatMessage) => boolean): Promise<T>;
  setReady(ready: boolean): void;
  offer(frame: ServerFrame | ChatMessage): boolean;
  error(frame: ErrorFrame): boolean;
}
