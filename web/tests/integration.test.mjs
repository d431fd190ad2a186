// The example backend of docs/integration.md (examples/backend.mjs), run as it is against a real
// natter server: it signs the tokens the SDK asks for, gets push notifications for an offline
// user, refuses and rewrites messages in the before-send hook, and sends through the server API.
// The guide shows the file as it is: this test also checks that they are the same.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Natter } from "../sdk/natter.js";
import { dataDir, startServer, stopServer, until } from "./server.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "../..");
const BACKEND = join(root, "examples/backend.mjs");
const WebSocket = globalThis.WebSocket ?? (await import("ws")).WebSocket;
const SECRET = "integration-secret-of-32-bytes!!";
const SERVICE_KEY = "integration-service-key-of-32-by";
const WEBHOOK_SECRET = "integration-webhook-secret-32-by";

const freePort = () => new Promise((resolve) => {
  const s = createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

function startBackend(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BACKEND], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
    child.stdout.on("data", (chunk) => {
      const m = String(chunk).match(/listening on (\S+)/);
      if (m) resolve({ child, url: m[1] });
    });
    child.on("exit", (code) => reject(new Error("backend exited " + code)));
  });
}

test("docs/integration.md shows examples/backend.mjs as it is", () => {
  const guide = readFileSync(join(root, "docs/integration.md"), "utf8");
  const shown = guide.match(/```js backend\.mjs\n([\s\S]*?)```/);
  assert.ok(shown, "the guide has a ```js backend.mjs block");
  assert.equal(shown[1], readFileSync(BACKEND, "utf8"));
});

test("the example backend: tokens, push, before-send, server API", async () => {
  const natterPort = await freePort();
  const natterUrl = `http://127.0.0.1:${natterPort}`;
  const backend = await startBackend({ NATTER_URL: natterUrl, NATTER_SECRET: SECRET, NATTER_SERVICE_KEY: SERVICE_KEY, WEBHOOK_SECRET, PORT: "0" });
  const dir = dataDir("integration");
  const { child: natter } = await startServer(`127.0.0.1:${natterPort}`, dir, {
    NATTER__AUTH__SECRET: SECRET,
    NATTER__SERVICE__KEY: SERVICE_KEY,
    NATTER__WEBHOOKS__PUSH__URL: backend.url + "/natter/push",
    NATTER__WEBHOOKS__PUSH__SECRET: WEBHOOK_SECRET,
    NATTER__WEBHOOKS__BEFORE_SEND__URL: backend.url + "/natter/before-send",
    NATTER__WEBHOOKS__BEFORE_SEND__SECRET: WEBHOOK_SECRET,
  });
  const getToken = async () => (await (await fetch(`${backend.url}/token?user=alice`)).json()).token;
  const alice = new Natter({ url: natterUrl, user: "alice", platform: "node", WebSocket, getToken });
  const got = [];
  alice.on("message", (m) => got.push(m));
  try {
    await alice.connect();
    // Bob has no device connected: the backend is told, signed, with a preview.
    const ack = await alice.send("bob", "are you there?");
    await until(async () => (await (await fetch(`${backend.url}/notifications?user=bob`)).json()).length === 1, "the push");
    const [push] = await (await fetch(`${backend.url}/notifications?user=bob`)).json();
    assert.deepEqual([push.sender, push.conv_id, push.server_id, push.preview], ["alice", "d:alice:bob", ack.server_id, "are you there?"]);

    // The before-send hook refuses one message and rewrites another.
    await assert.rejects(alice.send("bob", "cheap spam"), (e) => e.code === "refused_by_backend" && /no spam here/.test(e.message));
    const rewritten = await alice.send("bob", "darn it");
    const page = await alice.history("d:alice:bob");
    assert.deepEqual(page.messages.map((m) => m.content), ["are you there?", "d**n it"]);
    assert.equal(page.messages[1].server_id, rewritten.server_id);

    // The server API: a welcome from the support account reaches alice's open connection.
    const welcome = await (await fetch(`${backend.url}/welcome?user=alice`)).json();
    assert.ok(welcome.server_id, JSON.stringify(welcome));
    await until(() => got.some((m) => m.send_id === "support"), "the welcome");
    assert.equal(got.find((m) => m.send_id === "support").content, "Welcome, alice!");

    // A request not signed by Natter is refused.
    const forged = await fetch(`${backend.url}/natter/push`, { method: "POST", body: "{}", headers: { "X-Natter-Timestamp": "1", "X-Natter-Signature": "v1=00" } });
    assert.equal(forged.status, 401);
  } finally {
    alice.close();
    await stopServer(natter);
    await stopServer(backend.child);
    rmSync(dir, { recursive: true, force: true });
  }
});
