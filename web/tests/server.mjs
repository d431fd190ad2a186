// Starting and stopping a real natter server for the web tests (NATTER_BIN, default
// ../target/debug/natter), each with a data directory of its own; and signing tokens as an app's
// backend does.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.NATTER_BIN || join(here, "../../target/debug/natter");

export const dataDir = (tag) => mkdtempSync(join(tmpdir(), `natter-${tag}-`));

/** Starts natter on `listen` with `env` (NATTER__... settings); resolves with its child and address. */
export function startServer(listen, dir, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ["serve", "--listen", listen], {
      env: { ...process.env, NATTER__STORAGE__PATH: dir, RUST_LOG: "info", ...env },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let buffered = "";
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error("server did not start")); }, 15000);
    child.stdout.on("data", (chunk) => {
      buffered += chunk;
      const m = buffered.match(/addr=(\S+)/);
      if (m && timer) { clearTimeout(timer); resolve({ child, addr: m[1] }); }
    });
    child.on("exit", (code) => reject(new Error("server exited " + code)));
  });
}

export function stopServer(child, signal = "SIGTERM") {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill(signal);
  });
}

/** An HS256 JWT for `user`, valid for `ttl` seconds, signed with `secret`. */
export function sign(secret, user, ttl = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = b64({ alg: "HS256", typ: "JWT" }) + "." + b64({ sub: user, iat: now, exp: now + ttl });
  return body + "." + createHmac("sha256", secret).update(body).digest("base64url");
}

/** Resolves when `fn()` is true, checking every 20 ms; fails after `ms`. */
export async function until(fn, what, ms = 10000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 20));
  }
}
