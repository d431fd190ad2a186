// The JavaScript SDK (web/sdk/natter.js) in Node.js against a real natter server with tokens:
// chat, receipts, typing, recall and edit, the chat list and history; reconnection through a
// server crash with resend and de-duplication; resync from saved cursors (inbox and groups);
// token refresh on the open connection; revocation followed by a new token.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { Natter, NatterError, directId, MsgType } from "../sdk/natter.js";
import { dataDir, sign, startServer, stopServer, until } from "./server.mjs";

// Node.js 22 has a WebSocket (20: with --experimental-websocket, as scripts/test runs it); an
// older one gets the `ws` package, as an app on it would.
const WebSocket = globalThis.WebSocket ?? (await import("ws")).WebSocket;
const SECRET = "sdk-test-secret-of-thirty-two-by";
const KEY = "sdk-test-service-key-of-32-bytes!";
const ENV = { NATTER__AUTH__SECRET: SECRET, NATTER__AUTH__LEEWAY: "0s", NATTER__SERVICE__KEY: KEY };
const AB = directId("alice", "bob");

/** A client that records what it is told, its tokens signed as the app's backend would. */
function client(base, user, { ttl = 3600, platform = "node", cursors } = {}) {
  const tokens = [];
  const c = new Natter({
    url: base, user, platform, cursors, WebSocket, minBackoff: 50, maxBackoff: 500,
    getToken: async () => { const t = sign(SECRET, user, ttl); tokens.push(t); return t; },
  });
  c.got = { message: [], recall: [], edit: [], receipt: [], typing: [], state: [] };
  for (const type of Object.keys(c.got)) c.on(type, (v) => c.got[type].push(v));
  c.tokens = tokens;
  return c;
}

const contents = (c) => c.got.message.map((m) => m.content);

async function serverApi(base, method, path, body) {
  const r = await fetch(base + path, { method, headers: { "X-Api-Key": KEY, "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

test("two users chat through the SDK", async () => {
  const dir = dataDir("sdk");
  const { child, addr } = await startServer("127.0.0.1:0", dir, ENV);
  const base = "http://" + addr;
  const alice = client(base, "alice");
  const bob = client(base, "bob");
  try {
    await Promise.all([alice.connect(), bob.connect()]);
    const ack = await alice.send("bob", "hello bob");
    assert.equal(ack.conv_id, AB);
    assert.equal(ack.conv_seq, 1);
    assert.ok(ack.server_id);
    await until(() => bob.got.message.length === 1, "bob's message");
    assert.equal(bob.got.message[0].content, "hello bob");
    assert.equal(bob.chats.get(AB).unread, 1);
    assert.equal(alice.chats.get(AB).last.preview, "hello bob");

    // Typing, then a read receipt: alice sees bob's position.
    assert.equal(bob.typing(AB), true);
    assert.equal(bob.typing(AB), false, "typing is sent at most every 2 s");
    await until(() => alice.got.typing.length === 1, "typing");
    assert.equal(alice.got.typing[0].from, "bob");
    assert.equal(await bob.markRead(AB), 1);
    assert.equal(bob.chats.get(AB).unread, 0);
    await until(() => alice.chats.get(AB).peer_read_seq === 1, "the receipt");

    // Edit and recall reach the peer as events; history shows the result.
    const second = await alice.send(AB, "see you at 7");
    await alice.edit("bob", second.conv_seq, "see you at 8");
    await alice.recall("bob", ack.conv_seq);
    await until(() => bob.got.recall.length === 1 && bob.got.edit.length === 1, "edit and recall");
    assert.deepEqual([bob.got.edit[0].conv_seq, bob.got.edit[0].content], [2, "see you at 8"]);
    assert.equal(bob.got.recall[0].conv_seq, 1);
    const page = await bob.history(AB, { limit: 2 });
    assert.equal(page.has_more, true);
    const older = await bob.history(AB, { before: page.messages[0].conv_seq });
    const all = [...older.messages, ...page.messages];
    assert.deepEqual(all.map((m) => m.conv_seq), [1, 2, 3, 4]);
    assert.deepEqual([all[0].msg_type, all[0].content], [MsgType.RECALL, ""]);
    assert.equal(all[1].content, "see you at 8");

    // The chat list from the server agrees with the one kept from the frames.
    const kept = { ...bob.chats.get(AB) };
    const listed = (await bob.loadChats()).find((c) => c.conv_id === AB);
    assert.deepEqual([listed.last_seq, listed.unread, listed.last.preview], [kept.last_seq, kept.unread, kept.last.preview]);

    // Groups: created over the API, messages both ways.
    const { group } = await alice.createGroup("team", ["bob"]);
    await alice.send(group.group_id, "hi team");
    await until(() => contents(bob).includes("hi team"), "the group message");
    assert.equal(bob.chats.get(group.group_id).name, "team");

    // Refusals reject with the server's reason.
    await assert.rejects(bob.send("g_00000000000000000000000000000000", "x"), (e) => e instanceof NatterError && e.code === "not_a_member");
    await assert.rejects(bob.recall("alice", 2), (e) => e.code === "not_editable" || e.code === "forbidden" || e.code === "invalid_msg");
    await assert.rejects(bob.history("d:bob:alice"), (e) => e.status === 404 && e.code === "conversation_not_found");
    const chats = alice.got.message.filter((m) => m.msg_type === MsgType.SINGLE || m.msg_type === MsgType.GROUP);
    assert.equal(chats.length, 0, "alice's own sends come as acks, not messages");
  } finally {
    alice.close(); bob.close();
    await stopServer(child);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("through a server crash: reconnect, resend once, resync from saved cursors", async () => {
  const dir = dataDir("sdk-crash");
  let { child, addr } = await startServer("127.0.0.1:0", dir, ENV);
  const base = "http://" + addr;
  const alice = client(base, "alice");
  let bob = client(base, "bob");
  try {
    await Promise.all([alice.connect(), bob.connect()]);
    const { group } = await alice.createGroup("crew", ["bob"]);
    await alice.send("bob", "before");
    await until(() => bob.got.message.length >= 2, "the first messages");

    // The server dies; a message sent meanwhile waits, and goes once it is back.
    await stopServer(child, "SIGKILL");
    await until(() => alice.state === "reconnecting" && bob.state === "reconnecting", "both to notice");
    const later = alice.send("bob", "while it was down");
    ({ child } = await startServer(addr, dir, ENV));
    const ack = await later;
    assert.ok(ack.seq > 0);
    await until(() => contents(bob).includes("while it was down"), "the resent message");

    // Bob goes away with his cursors; what comes meanwhile (one-to-one and group) is replayed
    // to his next client, each message once.
    const saved = bob.cursors;
    bob.close();
    await alice.send("bob", "one");
    await alice.send(group.group_id, "two");
    await alice.send("bob", "three");
    bob = client(base, "bob", { cursors: saved });
    await bob.connect();
    await until(() => bob.got.message.length === 3, "the replay");
    assert.deepEqual(contents(bob).sort(), ["one", "three", "two"]);
    const ids = bob.got.message.map((m) => m.server_id);
    assert.equal(new Set(ids).size, ids.length);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(bob.got.message.length, 3, "nothing twice");
  } finally {
    alice.close(); bob.close();
    await stopServer(child);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("tokens: refreshed on the open connection, renewed after a revocation", async () => {
  const dir = dataDir("sdk-token");
  const { child, addr } = await startServer("127.0.0.1:0", dir, ENV);
  const base = "http://" + addr;
  // Three-second tokens: refreshed before they expire, the connection never drops.
  const carol = client(base, "carol", { ttl: 3 });
  const fixed = new Natter({ url: base, user: "dave", platform: "node", WebSocket, token: sign(SECRET, "dave") });
  const daveStates = [];
  fixed.on("state", (s) => daveStates.push(s));
  try {
    await Promise.all([carol.connect(), fixed.connect()]);
    await new Promise((r) => setTimeout(r, 4500));
    assert.ok(carol.tokens.length >= 2, `refreshed (${carol.tokens.length} tokens)`);
    assert.deepEqual(carol.got.state.map((s) => s.state), ["connecting", "open"], "never reconnected");
    await carol.send("dave", "still here");

    // Revoked (every token up to this second, the one carol's client may just have refreshed
    // to included): carol's client gets a new token and comes back; dave's, without getToken,
    // stops.
    const before = Math.floor(Date.now() / 1000) + 1;
    for (const user of ["carol", "dave"]) {
      const r = await serverApi(base, "POST", `/api/v1/users/${user}/revoke`, { before });
      assert.equal(r.status, 200);
    }
    await until(() => daveStates.some((s) => s.state === "closed"), "dave's close");
    assert.equal(daveStates.at(-1).code, 4002);
    await until(() => carol.got.state.filter((s) => s.state === "open").length === 2, "carol back");
    const ack = await carol.send("carol", "after the revocation");
    assert.ok(ack.server_id);
    await assert.rejects(fixed.send("carol", "x"), (e) => e.code === "closed");
  } finally {
    carol.close(); fixed.close();
    await stopServer(child);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A TCP proxy to `target` (host:port) that can be told to cut its connections right after the
 * client's next bytes went through: the server has the message, the client never sees its ack. */
async function cuttingProxy(target) {
  const [host, port] = target.split(":");
  const pairs = new Set();
  let armed = false;
  const server = createServer((client) => {
    const upstream = tcpConnect(Number(port), host);
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => { client.destroy(); upstream.destroy(); pairs.delete(pair); };
    client.on("data", (d) => {
      upstream.write(d);
      // The client's side goes at once; the server's gets what was written, then the end.
      if (armed) { armed = false; client.destroy(); upstream.end(); pairs.delete(pair); }
    });
    upstream.on("data", (d) => { if (!client.destroyed) client.write(d); });
    client.on("error", end); upstream.on("error", end);
    client.on("close", end); upstream.on("close", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    addr: `127.0.0.1:${server.address().port}`,
    arm() { armed = true; },
    close() { for (const p of pairs) { p.client.destroy(); p.upstream.destroy(); } server.close(); },
  };
}

test("a message whose ack was lost is resent with its local_id and stored once", async () => {
  const dir = dataDir("sdk-resend");
  const { child, addr } = await startServer("127.0.0.1:0", dir, ENV);
  const proxy = await cuttingProxy(addr);
  const alice = client("http://" + proxy.addr, "alice");
  const bob = client("http://" + addr, "bob");
  try {
    await Promise.all([alice.connect(), bob.connect()]);
    // The connection is cut just after the message left: its ack never arrives on it.
    proxy.arm();
    const ack = await alice.send("bob", "exactly once");
    assert.ok(alice.got.state.some((s) => s.state === "reconnecting"), "the connection was cut");
    await until(() => contents(bob).includes("exactly once"), "bob's copy");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(contents(bob).filter((c) => c === "exactly once").length, 1, "delivered once");
    const page = await bob.history(AB);
    assert.deepEqual(page.messages.map((m) => [m.content, m.server_id]), [["exactly once", ack.server_id]], "stored once");
  } finally {
    alice.close(); bob.close(); proxy.close();
    await stopServer(child);
    rmSync(dir, { recursive: true, force: true });
  }
});
