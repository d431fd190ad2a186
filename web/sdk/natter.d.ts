// TypeScript declarations of natter.js, the JavaScript SDK of the Natter messaging server.

/** A message as it travels (docs/protocol.md, "The message object"). */
export interface Msg {
  send_id: string;
  receiver_id: string;
  local_id: string;
  server_id: string;
  create_time: number;
  send_time: number;
  seq: number;
  send_seq: number;
  msg_type: number;
  content_type: number;
  content: string;
  is_read: boolean;
  conv_id: string;
  conv_seq: number;
}

export declare const MsgType: Readonly<{
  SINGLE: 0; GROUP: 1; GROUP_CREATED: 2; GROUP_MEMBERS_ADDED: 3; GROUP_MEMBER_LEFT: 4;
  GROUP_DISSOLVED: 5; GROUP_RENAMED: 8; GROUP_MEMBER_REMOVED: 9; GROUP_ROLE_CHANGED: 10;
  GROUP_INVITED: 11; CONVERSATION_UPDATED: 12; TOKEN_REFRESH: 13; READ: 23; ACK: 24;
  RECALL: 25; EDIT: 26; TYPING: 100;
}>;
export declare const ContentType: Readonly<{ DEFAULT: 0; TEXT: 1; ERROR: 2 }>;
export declare const CloseCode: Readonly<{
  NORMAL: 1000; GOING_AWAY: 1001; TOO_BIG: 1009; INTERNAL: 1011; REPLACED: 4001;
  BAD_TOKEN: 4002; SLOW_CONSUMER: 4003; HEARTBEAT_TIMEOUT: 4004; RATE_LIMITED: 4005;
  DISCONNECTED: 4006;
}>;

/** A refusal: `code` is the server's reason (`not_a_member`, `token_revoked`, ...), or `closed` / `disconnected`. */
export declare class NatterError extends Error {
  readonly code: string;
  /** The HTTP status, for API calls. */
  readonly status?: number;
  constructor(code: string, message?: string, status?: number);
}

export declare function isGroupId(id: string): boolean;
/** The conversation id of users `a` and `b` (`d:alice:bob`). */
export declare function directId(a: string, b: string): string;
/** The two users of a one-to-one conversation id, or null. */
export declare function usersOf(convId: string): [string, string] | null;

export interface Cursors {
  /** Highest inbox `seq` seen. */
  seq: number;
  /** Highest `send_seq` of this user's messages seen. */
  sendSeq: number;
  /** Group id → highest group `seq` seen. */
  groups?: Record<string, number>;
}

export interface Options {
  /** The server: `https://chat.example.com` (or `ws(s)://`). */
  url: string;
  user: string;
  /** This device's platform id (one connection per user and platform); default random. */
  platform?: string;
  /** A token from the app's backend (none in development mode). */
  token?: string;
  /** Asks the app's backend for a token: at start without `token`, before a token expires (refreshed on the open connection), and after the server refused one (expired, revoked). */
  getToken?: () => Promise<string>;
  /** Where to resume (saved from `client.cursors`): what came since is replayed. Without it, the connection is live from now and the past comes from `history`. */
  cursors?: Cursors;
  /** A WebSocket class (default: the global one; Node.js < 22: the `ws` package). */
  WebSocket?: unknown;
  fetch?: typeof fetch;
  /** Reconnection backoff in ms, doubling up to `maxBackoff`, each wait ±50%. Defaults 250 and 10000. */
  minBackoff?: number;
  maxBackoff?: number;
  /** How long before a token expires to refresh it, in ms (at most a fifth of its life). Default 60000. */
  refreshMargin?: number;
}

/** An entry of the chat list, as `GET /api/v1/conversations` lists it, kept current from the frames. */
export interface Chat {
  conv_id: string;
  kind: "direct" | "group";
  /** One-to-one: the other user. */
  peer?: string;
  /** A group: its name. */
  name?: string;
  last: null | {
    conv_seq: number; server_id: string; send_id: string; msg_type: number;
    content_type: number; preview: string; send_time: number;
  };
  last_seq: number;
  read_seq: number;
  unread: number;
  /** One-to-one: how far the peer has read. */
  peer_read_seq?: number;
  joined_seq?: number;
  pinned: boolean;
  muted: boolean;
  activity: number;
}

export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface Events {
  /** A stored message or group notice for this device (replayed or live, each once). Your own sends from this device come as their acks instead. */
  message: Msg;
  /** An entry was recalled (its content is gone for everyone). */
  recall: { conv_id: string; conv_seq: number; by: string; msg: Msg };
  /** An entry was edited. */
  edit: { conv_id: string; conv_seq: number; content: string; by: string; msg: Msg };
  /** A read receipt: `from` read `conv_id` up to `conv_seq` (yourself: on another device). */
  receipt: { conv_id: string; conv_seq: number; from: string; msg: Msg };
  /** Somebody is typing (ephemeral). */
  typing: { conv_id: string; from: string; to: string; msg: Msg };
  /** Another ephemeral event (`msg_type` 101-199). */
  event: { conv_id: string; from: string; to: string; msg: Msg };
  /** Your settings or read position changed on another device (`msg_type` 12). */
  conversation: { conv_id: string; change: Record<string, unknown>; chat: Chat };
  /** A chat of the list changed (new entry, unread count, read positions, settings). */
  chat: Chat;
  /** The connection's state; `closed` carries the close code and why, and is final. */
  state: { state: State; code?: number | null; error?: NatterError; retryIn?: number };
  /** Something went wrong that the SDK retries by itself (a failed token refresh, a network error). */
  error: Error;
}

export interface Ack extends Msg {}

export interface Page { messages: Msg[]; has_more: boolean }

export declare class Natter {
  constructor(options: Options);
  readonly user: string;
  readonly platform: string;
  readonly state: State;
  readonly cursors: Required<Cursors>;
  /** The chat list, by conversation id (fill it with `loadChats`). */
  readonly chats: Map<string, Chat>;

  on<K extends keyof Events>(type: K, fn: (value: Events[K]) => void): () => void;
  off<K extends keyof Events>(type: K, fn: (value: Events[K]) => void): void;

  /** Resolves once connected; rejects if the server refuses this user or token for good. */
  connect(): Promise<void>;
  close(): void;

  /** Sends to a user, a group or a conversation id; resolves with the ack, rejects with the reason. */
  send(to: string, content: string, options?: { msgType?: number; contentType?: number; localId?: string }): Promise<Ack>;
  recall(to: string, convSeq: number): Promise<Ack>;
  edit(to: string, convSeq: number, content: string): Promise<Ack>;
  /** "Typing", at most every 2 s per conversation; false if not sent. */
  typing(to: string): boolean;
  event(to: string, msgType: number, content?: string): boolean;
  /** Marks read up to `convSeq` (default: the last entry); resolves with the read position. */
  markRead(convId: string, convSeq?: number): Promise<number>;
  refreshToken(token: string): Promise<void>;
  /** The conversation a frame belongs to. */
  convOf(msg: Msg): string;

  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  conversations(page?: { limit?: number; cursor?: string | null }): Promise<{ conversations: Chat[]; next: string | null }>;
  loadChats(): Promise<Chat[]>;
  sortedChats(): Chat[];
  conversation(convId: string): Promise<Chat>;
  history(convId: string, page?: { before?: number; after?: number; limit?: number }): Promise<Page>;
  setSettings(convId: string, settings: { pinned?: boolean; muted?: boolean }): Promise<{ conv_id: string; pinned: boolean; muted: boolean }>;
  hide(convId: string, convSeqs: number[]): Promise<{ conv_id: string; hidden: number[] }>;
  reads(convId: string, convSeq: number): Promise<{ conv_id: string; conv_seq: number; read: number; of: number }>;
  groups(): Promise<{ group_id: string; name: string; owner: string; created_at: number; role: string; seq: number }[]>;
  createGroup(name: string, members?: string[]): Promise<{ group: { group_id: string; name: string; owner: string; created_at: number }; members: { user_id: string; role: string; joined_seq: number }[]; invited?: string[] }>;
  online(user: string): Promise<{ user_id: string; online: boolean; platforms: string[] }>;
}
