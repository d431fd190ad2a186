// Browser test of the web chat page: two users in two tabs of headless Chromium, against a real
// natter server (NATTER_BIN, default ../target/debug/natter) with its own SQLite directory.
// Set NATTER_SCREENSHOTS=DIR to keep screenshots (docs/screenshots holds the README's).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.NATTER_BIN || join(here, "../../target/debug/natter");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = process.env.NATTER_SCREENSHOTS || mkdtempSync(join(tmpdir(), "natter-shots-"));

function startServer(listen, dataDir) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ["serve", "--listen", listen], {
      env: { ...process.env, NATTER__STORAGE__PATH: dataDir, RUST_LOG: "info" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let buffered = "";
    const timer = setTimeout(() => reject(new Error("server did not start")), 15000);
    child.stdout.on("data", (chunk) => {
      buffered += chunk;
      const m = buffered.match(/addr=(\S+)/);
      if (m && timer) { clearTimeout(timer); resolve({ child, addr: m[1] }); }
    });
    child.on("exit", (code) => reject(new Error("server exited " + code)));
  });
}

function stopServer(child, signal = "SIGTERM") {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill(signal);
  });
}

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
    await bob.click("#convs li[data-id=alice]");
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
    await bob.click("#convs li[data-id=alice]");
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
