// Browser test of the web chat page: two users in two tabs of headless Chromium, against a real
// natter server (NATTER_BIN, default ../target/debug/natter) with its own SQLite directory.
// Set NATTER_SCREENSHOTS=DIR to keep screenshots (docs/screenshots holds the README's).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, stopServer } from "./server.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = process.env.NATTER_SCREENSHOTS || mkdtempSync(join(tmpdir(), "natter-shots-"));

const AB = "d:alice:bob";

async function signIn(page, base, user) {
  await page.goto(base + "/");
  await page.fill("#user", user);
  await page.click("#signin");
  await waitStatus(page, "connected");
}

// The status line may be off screen (phone layout with no chat open): wait for its text.
async function waitStatus(page, text, timeout = 10000) {
  await page.waitForFunction((t) => document.getElementById("status").textContent.startsWith(t), text, { timeout });
}

test("two users chat in two tabs, through a reload and a server crash", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "natter-web-"));
  let { child: server, addr } = await startServer("127.0.0.1:0", dataDir);
  const base = "http://" + addr;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const alice = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
    const bob = await (await browser.newContext({ viewport: { width: 390, height: 760 }, isMobile: true })).newPage();
    await signIn(alice, base, "alice");
    await signIn(bob, base, "bob");

    // Alice opens a chat with bob and sends; the ack marks it delivered.
    await alice.fill("#newPeer", "bob");
    await alice.press("#newPeer", "Enter");
    await alice.fill("#text", "hello bob");
    await alice.press("#text", "Enter");
    await alice.waitForSelector(".msg.mine .meta[data-state=delivered], .msg.mine .meta[data-state=read]");
    await alice.waitForSelector("#presence:text('online')");

    // Bob sees the conversation, opens it (on a phone-sized screen), reads and answers.
    await bob.click(`#convs li[data-id="${AB}"]`);
    await bob.waitForSelector(".msg:not(.mine):has-text('hello bob')");
    await alice.waitForSelector(".msg.mine .meta[data-state=read]");
    await bob.fill("#text", "hi alice, how are you?");
    await bob.press("#text", "Enter");
    await alice.waitForSelector(".msg:not(.mine):has-text('hi alice, how are you?')");
    await alice.screenshot({ path: join(shots, "chat-desktop.png") });
    await bob.screenshot({ path: join(shots, "chat-phone.png") });

    // A reload restores the history through sync.
    await bob.reload();
    await waitStatus(bob, "connected");
    await bob.click(`#convs li[data-id="${AB}"]`);
    await bob.waitForSelector(".msg:not(.mine):has-text('hello bob')");
    await bob.waitForSelector(".msg.mine:has-text('hi alice, how are you?')");
    assert.equal(await bob.locator(".msg").count(), 2, "no duplicates after the reload");

    // The server is killed (SIGKILL: no close frame, nothing flushed): both pages notice.
    await stopServer(server, "SIGKILL");
    await waitStatus(alice, "reconnecting");
    await waitStatus(bob, "reconnecting");
    // Alice writes while she is offline: the page keeps the message and sends it once the
    // server is back; bob, offline when it was written, gets it when he reconnects.
    await alice.fill("#text", "written while offline");
    await alice.press("#text", "Enter");
    ({ child: server } = await startServer(addr, dataDir));
    await waitStatus(alice, "connected", 20000);
    await waitStatus(bob, "connected", 20000);
    await alice.waitForSelector(".msg.mine:has-text('written while offline') .meta[data-state=delivered], " +
      ".msg.mine:has-text('written while offline') .meta[data-state=read]");
    await bob.waitForSelector(".msg:not(.mine):has-text('written while offline')");
    await alice.fill("#text", "back after the restart");
    await alice.press("#text", "Enter");
    await bob.waitForSelector(".msg:not(.mine):has-text('back after the restart')");
    assert.equal(await bob.locator(".msg").count(), 4, "every message once");
  } finally {
    await browser.close();
    await stopServer(server);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

// Sends `n` messages as `user` to `to` from inside `page` (a WebSocket of its own), acked.
async function sendMany(page, base, user, to, n, prefix) {
  await page.goto(base + "/");
  await page.evaluate(async ([user, to, n, prefix]) => {
    const ws = new WebSocket(`ws://${location.host}/ws/${user}/conn/script`);
    await new Promise((ok) => { ws.onopen = ok; });
    let acked = 0;
    const done = new Promise((ok) => { ws.onmessage = (e) => { if (JSON.parse(e.data).msg_type === 24 && ++acked === n) ok(); }; });
    for (let i = 1; i <= n; i++) ws.send(JSON.stringify({ receiver_id: to, local_id: prefix + i, content: prefix + " " + i }));
    await done;
    ws.close();
  }, [user, to, n, prefix]);
}

// What a page's chat list shows: id, unread badge, preview, in order.
async function listOf(page) {
  return page.$$eval("#convs li", (lis) => lis.map((li) => [li.dataset.id,
    (li.querySelector(".unread") || { textContent: "" }).textContent, li.querySelector(".last").textContent]));
}

test("conversations: the same list, order, badges and history on a second device; scroll-back; recall; typing", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "natter-web-"));
  const { child: server, addr } = await startServer("127.0.0.1:0", dataDir);
  const base = "http://" + addr;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const script = await (await browser.newContext()).newPage();
    // History alice has never seen: 70 messages from carol, 3 from bob, bob's last.
    await sendMany(script, base, "carol", "alice", 70, "c");
    await sendMany(script, base, "bob", "alice", 3, "b");
    const desk = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
    await signIn(desk, base, "alice");
    await desk.waitForSelector(`#convs li[data-id="${AB}"] .unread:text("3")`);
    const expected = [[AB, "3", "b 3"], ["d:alice:carol", "70", "c 70"]];
    assert.deepEqual(await listOf(desk), expected, "newest first, with unread counts and previews");

    // A second device (a fresh sign-in in another browser context) shows the same.
    const phone = await (await browser.newContext({ viewport: { width: 1000, height: 700 } })).newPage();
    await signIn(phone, base, "alice");
    await phone.waitForSelector(`#convs li[data-id="${AB}"]`);
    assert.deepEqual(await listOf(phone), expected);

    // Opening carol's chat shows its last 50 in order; scrolling up loads the 20 before.
    await desk.click('#convs li[data-id="d:alice:carol"]');
    await desk.waitForSelector(".msg:has-text('c 70')");
    const shown = async (page) => page.$$eval(".msg", (ms) => ms.map((m) => Number(m.dataset.seq)));
    assert.deepEqual(await shown(desk), Array.from({ length: 50 }, (_, i) => i + 21));
    await desk.evaluate(() => { document.getElementById("messages").scrollTop = 0; });
    await desk.waitForSelector('.msg[data-seq="1"]');
    assert.deepEqual(await shown(desk), Array.from({ length: 70 }, (_, i) => i + 1));
    // Reading it clears the badge on the other device too.
    await phone.waitForFunction(() => !document.querySelector('#convs li[data-id="d:alice:carol"] .unread'));

    // The phone opens bob's chat: the same history, in order.
    await phone.click(`#convs li[data-id="${AB}"]`);
    await phone.waitForSelector(".msg:has-text('b 3')");
    assert.deepEqual(await shown(phone), [1, 2, 3]);

    // Bob, signed in, types: alice sees "typing…"; nothing is stored.
    const bob = await (await browser.newContext({ viewport: { width: 1000, height: 700 } })).newPage();
    await signIn(bob, base, "bob");
    await bob.click(`#convs li[data-id="${AB}"]`);
    await bob.waitForSelector(".msg.mine:has-text('b 3')");
    await bob.type("#text", "hel");
    await phone.waitForSelector("#typing:text('typing…')");
    const stored = await phone.evaluate(async () => (await fetch("/api/v1/conversations/d%3Aalice%3Abob/messages?user_id=alice")).json());
    assert.equal(stored.messages.length, 3, "typing is never stored");

    // Bob recalls his last message: it turns into "message recalled" in alice's open chat.
    await bob.click(".msg.mine:has-text('b 3') button.recall");
    await phone.waitForSelector(".msg.recalled:has-text('message recalled')");
    assert.equal(await phone.locator(".msg:has-text('b 3')").count(), 0);
    await desk.click(`#convs li[data-id="${AB}"]`);
    await desk.waitForSelector(".msg.recalled");
    await phone.screenshot({ path: join(shots, "conversations.png") });

    // A refused sign-in says why, instead of reconnecting for ever.
    const refused = await (await browser.newContext()).newPage();
    await refused.goto(base + "/");
    await refused.fill("#user", "g_not_a_user");
    await refused.click("#signin");
    await waitStatus(refused, "refused: invalid_id");
    assert.match(await refused.textContent("#error"), /refused this sign-in: .*g_/);
  } finally {
    await browser.close();
    await stopServer(server);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
