// An app's backend for Natter (docs/integration.md): signs tokens for its users, takes the push
// webhook (to send notifications), answers the before-send hook, and sends as its support account
// through the server API. Node.js 18+, no dependencies: node examples/backend.mjs
import { createServer } from "node:http";
import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";

const { NATTER_URL = "http://127.0.0.1:50000", NATTER_SECRET, NATTER_SERVICE_KEY, WEBHOOK_SECRET, PORT = "8080" } = process.env;
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const pushed = new Map(); // user → notifications: where you would call APNs or FCM

// A token for `user`, signed with auth.secret (HS256), valid for an hour, revocable by its jti.
function tokenFor(user) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, iat: now, exp: now + 3600, jti: randomUUID() })}`;
  return `${body}.${createHmac("sha256", NATTER_SECRET).update(body).digest("base64url")}`;
}

// Whether a webhook call is Natter's: the HMAC of "<timestamp>.<body>", at most five minutes old.
function fromNatter(req, body) {
  const ts = req.headers["x-natter-timestamp"] ?? "";
  const want = Buffer.from("v1=" + createHmac("sha256", WEBHOOK_SECRET).update(`${ts}.${body}`).digest("hex"));
  const got = Buffer.from(req.headers["x-natter-signature"] ?? "");
  return got.length === want.length && timingSafeEqual(got, want) && Math.abs(Date.now() / 1000 - Number(ts)) < 300;
}

// Sends as `from` through the server API: stored, delivered and acked like a message from an app.
async function sendAs(from, to, content) {
  const msg = { send_id: from, receiver_id: to, local_id: randomUUID(), create_time: Date.now(), content };
  const headers = { "X-Api-Key": NATTER_SERVICE_KEY, "Content-Type": "application/json" };
  const answer = await fetch(`${NATTER_URL}/api/v1/messages`, { method: "POST", headers, body: JSON.stringify(msg) });
  return answer.json();
}

const server = createServer(async (req, res) => {
  let body = "";
  for await (const chunk of req) body += chunk;
  const url = new URL(req.url, "http://backend");
  const user = url.searchParams.get("user");
  const reply = (status, value) => res.writeHead(status, { "Content-Type": "application/json" }).end(JSON.stringify(value));
  // Your app's own routes (behind your own sign-in in a real app).
  if (url.pathname === "/token") return reply(200, { token: tokenFor(user) });
  if (url.pathname === "/welcome") return reply(200, await sendAs("support", user, `Welcome, ${user}!`));
  if (url.pathname === "/notifications") return reply(200, pushed.get(user) ?? []);
  // Natter's webhooks.
  if (!fromNatter(req, body)) return reply(401, { error: "not signed by Natter" });
  if (url.pathname === "/natter/push") {
    for (const n of JSON.parse(body).notifications) pushed.set(n.receiver, [...(pushed.get(n.receiver) ?? []), n]);
    return reply(200, {});
  }
  if (url.pathname === "/natter/before-send") {
    const { content } = JSON.parse(body).message;
    if (/\bspam\b/i.test(content)) return reply(200, { action: "refuse", reason: "no spam here" });
    if (/\bdarn\b/i.test(content)) return reply(200, { action: "replace", content: content.replace(/\bdarn\b/gi, "d**n") });
    return reply(200, { action: "allow" });
  }
  reply(404, { error: "no such route" });
});
server.listen(Number(PORT), "127.0.0.1", () => console.log(`backend listening on http://127.0.0.1:${server.address().port}`));
