// natter.js: the JavaScript SDK of the Natter messaging server (docs/protocol.md).
//
// One ES module, no build step, no dependencies. It runs in browsers (served by every Natter
// server at /sdk/natter.js), in Node.js 22+ (20 with --experimental-websocket, or pass any
// WebSocket implementation, such as the `ws` package, as `options.WebSocket`), Deno and Bun.
//
// What it does for the app: one WebSocket per device, kept up (reconnects with exponential
// backoff and jitter, resyncs from its cursors: the inbox, the sent stream and every group, so
// nothing is missed, and drops what it has seen, so nothing comes twice); sends with an ack
// (unacknowledged messages are resent with their `local_id` after a reconnect: the server
// stores them once); refreshes the token on the open connection before it expires; keeps a chat
// list current (unread counts, last entries, read positions); and wraps the HTTP API (history
// pages, read, settings, groups).

/** `msg_type` values (docs/protocol.md, "msg_type"). */
export const MsgType = Object.freeze({
  SINGLE: 0, GROUP: 1, GROUP_CREATED: 2, GROUP_MEMBERS_ADDED: 3, GROUP_MEMBER_LEFT: 4,
  GROUP_DISSOLVED: 5, GROUP_RENAMED: 8, GROUP_MEMBER_REMOVED: 9, GROUP_ROLE_CHANGED: 10,
  GROUP_INVITED: 11, CONVERSATION_UPDATED: 12, TOKEN_REFRESH: 13, READ: 23, ACK: 24,
  RECALL: 25, EDIT: 26, TYPING: 100,
});

/** `content_type` values. */
export const ContentType = Object.freeze({ DEFAULT: 0, TEXT: 1, ERROR: 2 });

/** WebSocket close codes (docs/protocol.md, "Close codes"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, TOO_BIG: 1009, INTERNAL: 1011, REPLACED: 4001,
  BAD_TOKEN: 4002, SLOW_CONSUMER: 4003, HEARTBEAT_TIMEOUT: 4004, RATE_LIMITED: 4005,
  DISCONNECTED: 4006,
});

/** Closes after which the SDK does not reconnect by itself (4002 too, without `getToken`). */
const FINAL = new Set([CloseCode.TOO_BIG, CloseCode.REPLACED, CloseCode.DISCONNECTED]);

/** A refusal: `code` is the server's reason (`not_a_member`, `token_revoked`...) or `closed`. */
export class NatterError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.name = "NatterError";
    this.code = code;
    this.status = status;
  }
}

export const isGroupId = (id) => typeof id === "string" && id.startsWith("g_");

const escapeId = (s) => s.replace(/%/g, "%25").replace(/:/g, "%3A");
const unescapeId = (s) => s.replace(/%3A/g, ":").replace(/%25/g, "%");

/** The conversation id of users `a` and `b`: `d:` and both ids in UTF-8 byte order. */
export function directId(a, b) {
  const enc = new TextEncoder();
  const [x, y] = [enc.encode(a), enc.encode(b)];
  let less = x.length <= y.length;
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) { less = x[i] < y[i]; break; }
  }
  return "d:" + (less ? escapeId(a) + ":" + escapeId(b) : escapeId(b) + ":" + escapeId(a));
}

/** The two users of a one-to-one conversation id, or null. */
export function usersOf(convId) {
  const parts = typeof convId === "string" && convId.startsWith("d:") ? convId.slice(2).split(":") : [];
  return parts.length === 2 ? parts.map(unescapeId) : null;
}

/** The time a JWT expires (ms since the epoch), or null if it does not say. */
function expiryOf(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const { exp } = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4)));
    return typeof exp === "number" ? exp * 1000 : null;
  } catch (_) {
    return null;
  }
}

const SEEN_KEEP = 10000;
const TYPING_EVERY = 2000;
const TOKEN_ERRORS = new Set(["token_expired", "token_revoked", "token_missing"]);

export class Natter {
  /**
   * @param {object} options see natter.d.ts (`url`, `user`, `platform`, `token`, `getToken`,
   *   `cursors`, `WebSocket`, `fetch`, `minBackoff`, `maxBackoff`, `refreshMargin`).
   */
  constructor(options) {
    if (!options || !options.url || !options.user) throw new TypeError("Natter: options.url and options.user are required");
    const base = new URL(options.url);
    base.protocol = base.protocol.replace(/^ws/, "http");
    this.user = options.user;
    this.platform = options.platform || "js-" + Math.random().toString(36).slice(2, 10);
    /** The chat list: conversation id → chat (the API's listing, kept current). */
    this.chats = new Map();
    this._base = base.origin;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this._WebSocket) throw new TypeError("Natter: no WebSocket here; pass options.WebSocket (Node.js < 22: the `ws` package)");
    this._fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this._token = options.token || null;
    this._getToken = options.getToken || null;
    this._minBackoff = options.minBackoff ?? 250;
    this._maxBackoff = options.maxBackoff ?? 10000;
    this._refreshMargin = options.refreshMargin ?? 60000;
    this._backoff = this._minBackoff;
    this._handlers = new Map();
    this._state = "idle";
    this._ws = null;
    this._pending = new Map(); // local_id -> { wire, resolve, reject, resend }
    this._seen = new Set();
    this._seenOrder = [];
    this._localN = 0;
    this._typingSent = new Map();
    const c = options.cursors;
    this._resume = Boolean(c);
    this._cursors = c ? { seq: c.seq || 0, sendSeq: c.sendSeq || 0, groups: new Map(Object.entries(c.groups || {})) } : null;
  }

  /** Current state: `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
  get state() { return this._state; }

  /** Where a resync starts; save it (e.g. in localStorage) and pass it back as `options.cursors`. */
  get cursors() {
    const c = this._cursors || { seq: 0, sendSeq: 0, groups: new Map() };
    return { seq: c.seq, sendSeq: c.sendSeq, groups: Object.fromEntries(c.groups) };
  }

  /** Listens to `type` (see natter.d.ts: message, recall, edit, receipt, typing, event, chat, state, error); returns the function that stops it. */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) { this._handlers.get(type)?.delete(fn); }

  _emit(type, value) {
    for (const fn of this._handlers.get(type) || []) {
      try { fn(value); } catch (e) { console.error("natter: a", type, "handler threw", e); }
    }
  }

  _setState(state, detail = {}) {
    this._state = state;
    this._emit("state", { state, ...detail });
  }

  /** Connects; resolves once the connection is open, rejects if the server refuses it for good. */
  connect() {
    if (this._state !== "idle" && this._state !== "closed") return this._connecting || Promise.resolve();
    this._stopped = false;
    this._connecting = new Promise((resolve, reject) => { this._ready = { resolve, reject }; });
    this._open(false);
    return this._connecting;
  }

  /** Closes for good: pending sends fail with `closed`. */
  close() {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._refreshTimer);
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000);
    this._final(CloseCode.NORMAL, new NatterError("closed", "closed by the app"));
  }

  async _open(again) {
    if (!again) this._setState("connecting");
    try {
      if (!this._token && this._getToken) this._token = await this._getToken();
      if (!this._cursors) await this._startCursors();
    } catch (e) {
      return this._refusedOrRetry(e);
    }
    if (this._stopped) return;
    const c = this._cursors;
    const query = c.known === false ? "" : `?since_seq=${c.seq}&since_send_seq=${c.sendSeq}`;
    const url = this._base.replace(/^http/, "ws") + `/ws/${encodeURIComponent(this.user)}/conn/${encodeURIComponent(this.platform)}${query}`;
    const ws = this._token ? new this._WebSocket(url, ["natter", "bearer." + this._token]) : new this._WebSocket(url);
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      this._backoff = this._minBackoff;
      this._setState("open");
      for (const p of this._pending.values()) if (p.resend) this._transmit(p.wire);
      this._scheduleRefresh();
      this._ready?.resolve();
      this._ready = null;
      if (again || this._resume) this._catchUpGroups().catch((e) => this._emit("error", e));
    };
    ws.onmessage = (e) => {
      if (this._ws !== ws) return;
      let m;
      try { m = JSON.parse(typeof e.data === "string" ? e.data : String(e.data)); } catch (_) { return; }
      this._onFrame(m);
    };
    const lost = (code, reason) => {
      if (this._ws !== ws) return;
      this._ws = null;
      clearTimeout(this._refreshTimer);
      // What is not resent (receipts, token refreshes) fails now rather than never.
      for (const [id, p] of this._pending) {
        if (!p.resend) { this._pending.delete(id); p.reject(new NatterError("disconnected", "the connection closed before the answer")); }
      }
      this._onClose(code, reason, opened);
    };
    ws.onclose = (e) => lost(e.code, e.reason);
    // A refused upgrade: browsers fire error then close, some implementations (Node.js 20) only error.
    ws.onerror = () => { if (!opened) lost(1006, ""); };
  }

  /** The cursors of a first connection: live from now (the past comes from history pages). */
  async _startCursors() {
    const groups = new Map();
    try {
      const s = await this.api("GET", "/api/v1/seq");
      for (const g of (await this.api("GET", "/api/v1/groups")).groups) groups.set(g.group_id, g.seq);
      this._cursors = { seq: s.seq, sendSeq: s.send_seq, groups };
    } catch (e) {
      if (e.code !== "storage_disabled") throw e;
      this._cursors = { seq: 0, sendSeq: 0, groups, known: false };
    }
  }

  async _onClose(code, reason, opened) {
    if (this._stopped) return;
    if (FINAL.has(code) || (code === CloseCode.BAD_TOKEN && !this._getToken)) {
      return this._final(code, new NatterError(reason || "closed", `closed by the server (${code})`));
    }
    if (code === CloseCode.BAD_TOKEN) {
      this._token = null; // expired or revoked: ask the app's backend for a new one
      return this._retry(true);
    }
    if (!opened) {
      // Browsers are not told why an upgrade was refused: the API answers with the same token.
      try { await this.api("GET", "/api/v1/seq", undefined, false); } catch (e) { return this._refusedOrRetry(e); }
    }
    this._retry(false);
  }

  /** A refusal a retry would not fix ends it; a token one gets a new token; the rest retries. */
  _refusedOrRetry(e) {
    if (this._stopped) return;
    const status = e && e.status;
    if (status === 401 && this._getToken && TOKEN_ERRORS.has(e.code)) {
      this._token = null;
      return this._retry(true);
    }
    if (status && status < 500 && status !== 429 && e.code !== "storage_disabled") return this._final(null, e);
    this._emit("error", e);
    this._retry(false);
  }

  _retry(soon) {
    // A new token is asked for at once, but not again and again: the backoff still grows.
    const wait = soon && this._backoff === this._minBackoff ? 0 : this._backoff * (0.5 + Math.random());
    this._backoff = Math.min(this._backoff * 2, this._maxBackoff);
    this._setState("reconnecting", { retryIn: Math.round(wait) });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => { if (!this._stopped) this._open(true); }, wait);
  }

  _final(code, error) {
    this._stopped = true;
    for (const p of this._pending.values()) p.reject(new NatterError("closed", error.message));
    this._pending.clear();
    if (this._ready) { this._ready.reject(error); this._ready = null; }
    if (this._state !== "closed") this._setState("closed", { code, error });
  }

  _transmit(wire) {
    if (this._ws && this._state === "open") this._ws.send(JSON.stringify(wire));
  }

  _localId() {
    this._localN += 1;
    return globalThis.crypto?.randomUUID ? crypto.randomUUID() : `${this.platform}-${Date.now().toString(36)}-${this._localN}`;
  }

  /** Whom a frame for `target` (a user id, a group id or a conversation id) is addressed to. */
  _receiverOf(target) {
    const users = usersOf(target);
    if (!users) return target;
    return users[0] === this.user ? users[1] : users[0];
  }

  /** The conversation a frame belongs to. */
  convOf(m) {
    if (m.conv_id) return m.conv_id;
    if (isGroupId(m.receiver_id)) return m.receiver_id;
    return directId(this.user, m.send_id === this.user ? m.receiver_id : m.send_id);
  }

  /**
   * Sends `content` to `to` (a user, a group or a conversation id); resolves with the ack
   * (`server_id`, `seq`, `conv_id`, `conv_seq`...) or rejects with the server's reason. While
   * disconnected it waits, and is sent (again) on the next connection with the same `local_id`.
   */
  send(to, content, options = {}) {
    const receiver = this._receiverOf(to);
    const wire = {
      send_id: this.user, receiver_id: receiver, local_id: options.localId || this._localId(),
      create_time: Date.now(), content: String(content),
      msg_type: options.msgType ?? (isGroupId(receiver) ? MsgType.GROUP : MsgType.SINGLE),
      content_type: options.contentType ?? ContentType.TEXT,
    };
    return this._request(wire, true);
  }

  _request(wire, resend) {
    if (this._state === "closed" || this._state === "idle") return Promise.reject(new NatterError("closed", "not connected: call connect()"));
    return new Promise((resolve, reject) => {
      this._pending.set(wire.local_id, { wire, resolve, reject, resend });
      this._transmit(wire);
    });
  }

  /** Recalls the entry `convSeq` you sent in `to`'s conversation (within `messages.edit_window`). */
  recall(to, convSeq) {
    return this.send(to, JSON.stringify({ conv_seq: convSeq }), { msgType: MsgType.RECALL });
  }

  /** Replaces the content of the entry `convSeq` you sent. */
  edit(to, convSeq, content) {
    return this.send(to, JSON.stringify({ conv_seq: convSeq, content }), { msgType: MsgType.EDIT });
  }

  /** "Typing" to `to`, at most every 2 s per conversation (an ephemeral event: never stored). */
  typing(to) {
    const receiver = this._receiverOf(to);
    const last = this._typingSent.get(receiver) || 0;
    if (Date.now() - last < TYPING_EVERY) return false;
    this._typingSent.set(receiver, Date.now());
    return this.event(to, MsgType.TYPING, "typing");
  }

  /** An ephemeral event (`msg_type` 100-199) to the online devices of `to`; not stored or acked. */
  event(to, msgType, content = "") {
    if (this._state !== "open") return false;
    this._transmit({ receiver_id: this._receiverOf(to), msg_type: msgType, content: String(content) });
    return true;
  }

  /**
   * Marks a conversation read up to `convSeq` (default: its last entry): your other devices
   * and, one-to-one, the peer are told. Resolves with the read position.
   */
  async markRead(convId, convSeq) {
    const chat = this.chats.get(convId);
    const upto = convSeq ?? chat?.last_seq ?? 0;
    if (!upto) return 0;
    if (chat) this._setRead(chat, upto, false);
    if (this._state === "open") {
      const wire = { msg_type: MsgType.READ, receiver_id: this._receiverOf(convId), local_id: this._localId(), conv_seq: upto, content: "" };
      await this._request(wire, false);
      return upto;
    }
    const r = await this.api("POST", `${convPath(convId)}/read`, { conv_seq: upto });
    return r.read_seq;
  }

  /** Sends a new token on the open connection (and uses it for reconnections and the API). */
  async refreshToken(token) {
    this._token = token;
    if (this._state === "open") {
      await this._request({ receiver_id: this.user, msg_type: MsgType.TOKEN_REFRESH, local_id: this._localId(), content: token }, false);
    }
    this._scheduleRefresh();
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const exp = this._token && this._getToken ? expiryOf(this._token) : null;
    if (!exp) return;
    const left = exp - Date.now();
    const wait = Math.max(0, left - Math.min(this._refreshMargin, left / 5));
    this._refreshTimer = setTimeout(async () => {
      try {
        await this.refreshToken(await this._getToken());
      } catch (e) {
        this._emit("error", e);
      }
    }, wait);
  }

  _ack(a) {
    const p = this._pending.get(a.local_id);
    if (!p) {
      if (a.content_type === ContentType.ERROR) this._emit("error", errorOf(a.content));
      return;
    }
    this._pending.delete(a.local_id);
    if (a.content_type === ContentType.ERROR) return p.reject(errorOf(a.content));
    const c = this._cursors;
    if (c && a.send_seq) c.sendSeq = Math.max(c.sendSeq, a.send_seq);
    if (a.conv_seq && p.wire.msg_type !== MsgType.READ) {
      this._entry({ ...p.wire, ...a, msg_type: p.wire.msg_type, content: p.wire.content });
    }
    p.resolve(a);
  }

  _onFrame(m) {
    if (m.msg_type === MsgType.ACK) return this._ack(m);
    if (m.server_id) {
      if (this._seen.has(m.server_id)) return;
      this._seen.add(m.server_id);
      this._seenOrder.push(m.server_id);
      if (this._seenOrder.length > SEEN_KEEP) this._seen.delete(this._seenOrder.shift());
    }
    const c = this._cursors;
    if (c && m.seq) {
      if (isGroupId(m.receiver_id)) c.groups.set(m.receiver_id, Math.max(c.groups.get(m.receiver_id) || 0, m.seq));
      else if (m.send_id === this.user && m.receiver_id !== this.user) c.sendSeq = Math.max(c.sendSeq, m.send_seq);
      else c.seq = Math.max(c.seq, m.seq);
    }
    if (m.msg_type === MsgType.CONVERSATION_UPDATED) return this._updated(m);
    if (m.msg_type >= 100 && m.msg_type <= 199) {
      const event = { conv_id: this.convOf(m), from: m.send_id, to: m.receiver_id, msg: m };
      return this._emit(m.msg_type === MsgType.TYPING ? "typing" : "event", event);
    }
    if (m.msg_type === MsgType.READ) return this._receipt(m);
    this._entry(m, true);
  }

  /** A stored entry (a message, a notice, a recall, an edit): the chat list, then the app. */
  _entry(m, emit) {
    const chat = this._chat(this.convOf(m), m);
    if ([MsgType.GROUP_CREATED, MsgType.GROUP_MEMBERS_ADDED, MsgType.GROUP_RENAMED].includes(m.msg_type)) {
      try { const n = JSON.parse(m.content).name; if (n) chat.name = n; } catch (_) {}
    }
    let change = null;
    if (m.msg_type === MsgType.RECALL || m.msg_type === MsgType.EDIT) {
      try { change = JSON.parse(m.content); } catch (_) { change = {}; }
    }
    if (m.conv_seq > chat.last_seq) {
      // The list shows what a change did: a recall's preview is empty, an edit's the new text.
      const preview = m.msg_type === MsgType.RECALL ? "" : m.msg_type === MsgType.EDIT ? change.content ?? "" : m.content;
      chat.last_seq = m.conv_seq;
      chat.activity = m.send_time || Date.now();
      chat.last = { conv_seq: m.conv_seq, server_id: m.server_id, send_id: m.send_id, msg_type: m.msg_type,
        content_type: m.content_type, preview, send_time: m.send_time };
    }
    if (m.send_id === this.user) chat.read_seq = Math.max(chat.read_seq, m.conv_seq || 0);
    chat.unread = Math.max(0, chat.last_seq - chat.read_seq);
    this._emit("chat", chat);
    if (!emit) return;
    if (m.msg_type === MsgType.RECALL) this._emit("recall", { conv_id: chat.conv_id, conv_seq: change.conv_seq, by: m.send_id, msg: m });
    else if (m.msg_type === MsgType.EDIT) this._emit("edit", { conv_id: chat.conv_id, conv_seq: change.conv_seq, content: change.content, by: m.send_id, msg: m });
    else this._emit("message", m);
  }

  _receipt(m) {
    const chat = this._chat(this.convOf(m), m);
    if (m.conv_seq) {
      if (m.send_id === this.user) this._setRead(chat, m.conv_seq, true);
      else { chat.peer_read_seq = Math.max(chat.peer_read_seq || 0, m.conv_seq); this._emit("chat", chat); }
    }
    this._emit("receipt", { conv_id: chat.conv_id, conv_seq: m.conv_seq, from: m.send_id, msg: m });
  }

  _updated(m) {
    let change = {};
    try { change = JSON.parse(m.content); } catch (_) {}
    const chat = this._chat(m.conv_id || change.conv_id, m);
    if (change.read_seq) chat.read_seq = Math.max(chat.read_seq, change.read_seq);
    if ("pinned" in change) chat.pinned = change.pinned;
    if ("muted" in change) chat.muted = change.muted;
    chat.unread = Math.max(0, chat.last_seq - chat.read_seq);
    this._emit("chat", chat);
    this._emit("conversation", { conv_id: chat.conv_id, change, chat });
  }

  _setRead(chat, upto, emit) {
    chat.read_seq = Math.max(chat.read_seq, upto);
    chat.unread = Math.max(0, chat.last_seq - chat.read_seq);
    if (emit) this._emit("chat", chat);
  }

  /** The chat of `convId`, made from a frame if the list does not have it yet. */
  _chat(convId, m) {
    let chat = this.chats.get(convId);
    if (!chat) {
      const group = isGroupId(convId);
      const peer = group ? undefined : (usersOf(convId) || []).find((u) => u !== this.user) ?? this.user;
      chat = { conv_id: convId, kind: group ? "group" : "direct", last: null, last_seq: 0, read_seq: 0, unread: 0,
        pinned: false, muted: false, activity: m?.send_time || 0 };
      if (group) chat.name = convId; else { chat.peer = peer; chat.peer_read_seq = 0; }
      this.chats.set(convId, chat);
    }
    return chat;
  }

  /** After a reconnection: each group's messages missed meanwhile (read fan-out). */
  async _catchUpGroups() {
    const c = this._cursors;
    if (!c || c.known === false) return;
    for (const g of (await this.api("GET", "/api/v1/groups")).groups) {
      let after = c.groups.get(g.group_id);
      if (after === undefined) { c.groups.set(g.group_id, 0); after = 0; }
      while (g.seq > after) {
        const page = await this.api("GET", `/api/v1/groups/${encodeURIComponent(g.group_id)}/messages?after_seq=${after}&limit=200`);
        for (const m of page.messages) this._onFrame(m);
        const last = page.messages.length ? page.messages[page.messages.length - 1].seq : after;
        if (!page.has_more || last <= after) break;
        after = last;
      }
    }
  }

  // ---- The HTTP API ----

  /**
   * Calls the HTTP API as this user; resolves with the JSON answer (null for 204), rejects
   * with a NatterError (`code` the server's `error`, `status` the HTTP status). A token the
   * server calls expired or revoked is renewed with `getToken` and the call made once more.
   */
  async api(method, path, body, renew = true) {
    const url = new URL(path, this._base);
    const headers = { "Content-Type": "application/json" };
    if (this._token) headers.Authorization = "Bearer " + this._token;
    else url.searchParams.set("user_id", this.user);
    const r = await this._fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let answer = null;
    try { answer = text ? JSON.parse(text) : null; } catch (_) {}
    if (r.ok) return answer;
    const error = new NatterError(answer?.error || "http_" + r.status, answer?.detail || text || r.statusText, r.status);
    if (renew && r.status === 401 && this._getToken && TOKEN_ERRORS.has(error.code)) {
      this._token = await this._getToken();
      return this.api(method, path, body, false);
    }
    throw error;
  }

  /** One page of the chat list: `{conversations, next}`. */
  conversations({ limit = 50, cursor } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    return this.api("GET", "/api/v1/conversations?" + q);
  }

  /** The whole chat list into `chats` (pinned first, then newest activity); returns it sorted. */
  async loadChats() {
    let cursor = null;
    do {
      const page = await this.conversations({ limit: 200, cursor });
      for (const l of page.conversations) {
        // What arrived while the page was on its way is newer than the page.
        const had = this.chats.get(l.conv_id);
        const chat = { ...l };
        if (had) {
          if (had.last_seq > l.last_seq) Object.assign(chat, { last: had.last, last_seq: had.last_seq, activity: had.activity });
          chat.read_seq = Math.max(l.read_seq, had.read_seq);
          if (chat.kind === "direct") chat.peer_read_seq = Math.max(l.peer_read_seq || 0, had.peer_read_seq || 0);
          chat.unread = Math.max(0, chat.last_seq - chat.read_seq);
        }
        this.chats.set(l.conv_id, chat);
      }
      cursor = page.next;
    } while (cursor);
    return this.sortedChats();
  }

  /** The chats as a list shows them: pinned first, then newest activity first. */
  sortedChats() {
    return [...this.chats.values()].sort((a, b) => (b.pinned - a.pinned) || (b.activity - a.activity) || (a.conv_id < b.conv_id ? -1 : 1));
  }

  /** One conversation, as listed. */
  conversation(convId) { return this.api("GET", convPath(convId)); }

  /** A page of history: `{messages, has_more}`, oldest first; `before` or `after` a conv_seq, else the latest. */
  history(convId, { before, after, limit = 50 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before !== undefined) q.set("before", String(before));
    if (after !== undefined) q.set("after", String(after));
    return this.api("GET", `${convPath(convId)}/messages?` + q);
  }

  /** Pins or mutes a conversation (either); your other devices are told. */
  setSettings(convId, settings) { return this.api("PATCH", convPath(convId), settings); }

  /** Hides entries from your own history (delete for me). */
  hide(convId, convSeqs) { return this.api("POST", `${convPath(convId)}/hide`, { conv_seqs: convSeqs }); }

  /** How many of the other members have read up to `convSeq`: `{read, of}`. */
  reads(convId, convSeq) { return this.api("GET", `${convPath(convId)}/reads?conv_seq=${convSeq}`); }

  /** Your groups, with each group's last seq. */
  async groups() { return (await this.api("GET", "/api/v1/groups")).groups; }

  /** Creates a group: `{group, members, invited}`. */
  createGroup(name, members = []) { return this.api("POST", "/api/v1/groups", { name, members }); }

  /** Whether `user` is connected anywhere: `{online, platforms}`. */
  online(user) { return this.api("GET", `/api/v1/users/${encodeURIComponent(user)}/online`); }
}

const convPath = (convId) => "/api/v1/conversations/" + encodeURIComponent(convId);

/** An error reply's `<reason>: <detail>` as a NatterError. */
function errorOf(content) {
  const i = content.indexOf(": ");
  return i < 0 ? new NatterError(content, content) : new NatterError(content.slice(0, i), content.slice(i + 2));
}
