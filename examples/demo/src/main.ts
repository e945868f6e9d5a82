// `pnpm demo`: starts the orders server (src/server.ts) as two processes on one temporary SQLite file, plays a
// scripted client against them, checks every answer against the contract, and exits 0 only if all checks held.
import { mkdtempSync, rmSync } from "node:fs";
import { STATUS_CODES } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import Database from "better-sqlite3";
import { type Attempt, postOrder, postOrderAndDrop, type Reply, requestsSent } from "./client.js";
import { ServerProcess } from "./servers.js";

const LEASE_MS = 1_500; // short, so that step 6 does not wait 30 s for a crashed request's lease
const CHARGE_MS = 500; // how long each order's simulated payment takes

const colour = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: number) => (text: string) => (colour ? `\x1b[${code}m${text}\x1b[0m` : text);
const bold = paint(1);
const dim = paint(2);
const green = paint(32);
const red = paint(31);
const print = (line = "") => console.log(line);

const dir = mkdtempSync(join(tmpdir(), "idempotency-demo-"));
const dbPath = join(dir, "demo.db");
const servers: ServerProcess[] = [];

// ---- checks -----------------------------------------------------------------------------------------------

let stepTitle = "";
let checks = 0;
const failures: string[] = [];

function check(ok: boolean, what: string, got?: string): void {
  checks += 1;
  if (ok) {
    print(`   ${green("✓")} ${what}`);
  } else {
    const detail = got === undefined ? "" : ` (got ${got})`;
    print(`   ${red(`✗ FAILED: ${what}${detail}`)}`);
    failures.push(`${stepTitle}: ${what}${detail}`);
  }
}

function step(title: string): void {
  stepTitle = title;
  print();
  print(bold(title));
}

function explain(text: string): void {
  print(dim(`   ${text}`));
}

// ---- what the client sends and sees -----------------------------------------------------------------------

function showRequest(server: ServerProcess, attempt: Attempt): void {
  const { key, tenant, order } = attempt;
  print(
    `   → ${server.name}  POST /orders  Idempotency-Key: ${key}  X-Tenant-Id: ${tenant}  ${JSON.stringify(order)}`,
  );
}

function showReply(reply: Reply): void {
  const notable = ["idempotent-replayed", "retry-after"]
    .filter((name) => reply.headers.has(name))
    .map((name) => `  ${name.replace(/(^|-)\w/g, (c) => c.toUpperCase())}: ${reply.headers.get(name)}`);
  const body = isProblem(reply) ? `problem: ${reply.body.title}` : reply.text;
  print(`   ← ${reply.status} ${STATUS_CODES[reply.status]}${notable.join("")}  ${body}`);
  if (isProblem(reply)) print(`     ${dim(String(reply.body.detail))}`);
}

function showServer(server: ServerProcess, line: string): void {
  print(`     ${server.name} │ ${line}`);
}

const isProblem = (reply: Reply) => reply.headers.get("content-type") === "application/problem+json";
const isReplay = (reply: Reply) => reply.headers.get("idempotent-replayed") === "true";

function checkCreated(reply: Reply, replayed: boolean, label = ""): void {
  const what = replayed ? "201 replayed (Idempotent-Replayed: true)" : "201 Created by running the handler";
  check(
    reply.status === 201 && isReplay(reply) === replayed,
    label + what,
    `${reply.status}${isReplay(reply) ? " replayed" : ""}`,
  );
}

function checkProblem(reply: Reply, status: number, type: string): void {
  check(
    reply.status === status && isProblem(reply) && reply.body.type === `urn:idempotency:problem:${type}`,
    `${status} application/problem+json, type urn:idempotency:problem:${type}`,
    `${reply.status} ${reply.headers.get("content-type")} ${reply.body.type}`,
  );
}

function checkRetryAfter(reply: Reply): void {
  const retryAfter = reply.headers.get("retry-after") ?? "";
  check(/^[1-9]\d*$/.test(retryAfter), "Retry-After: a whole number of seconds", JSON.stringify(retryAfter));
}

// ---- the orders table, read straight from the SQLite file both servers write ------------------------------

interface OrderRow {
  id: number;
  tenant: string;
  idempotency_key: string;
  item: string;
  quantity: number;
  created_by: string;
}

function readOrders(): OrderRow[] {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare("SELECT * FROM orders ORDER BY id").all() as OrderRow[];
  } finally {
    db.close();
  }
}

function ordersFor(tenant: string, key: string): OrderRow[] {
  return readOrders().filter((row) => row.tenant === tenant && row.idempotency_key === key);
}

function checkOrderCount(tenant: string, key: string, expected: number): OrderRow[] {
  const rows = ordersFor(tenant, key);
  check(
    rows.length === expected,
    `${expected} order${expected === 1 ? "" : "s"} in the database for ${tenant}'s key ${key}`,
    String(rows.length),
  );
  return rows;
}

// ---- the steps --------------------------------------------------------------------------------------------

async function demo(a: ServerProcess, b: ServerProcess): Promise<void> {
  step("1. A first order");
  const first: Attempt = { key: "order-1", tenant: "acme", order: { item: "coffee", quantity: 2 } };
  showRequest(a, first);
  const created = await postOrder(a.url, first);
  showReply(created);
  checkCreated(created, false);
  checkOrderCount("acme", "order-1", 1);
  explain("The first request with a key runs the handler; its response is stored for retries.");

  step("2. The same order retried after a dropped connection");
  const flaky: Attempt = { key: "order-2", tenant: "acme", order: { item: "tea", quantity: 1 } };
  const charging = a.waitFor(/^charging .*key order-2\)/);
  const stored = a.waitFor(/^stored /);
  showRequest(a, flaky);
  const dropped = postOrderAndDrop(a.url, flaky, charging);
  showServer(a, await charging);
  check(await dropped, "the client dropped the connection before any response arrived");
  showServer(a, await stored);
  print("   the client never saw an answer, so it sends the very same request again:");
  showRequest(a, flaky);
  const retried = await postOrder(a.url, flaky);
  showReply(retried);
  checkCreated(retried, true);
  const [flakyOrder] = checkOrderCount("acme", "order-2", 1);
  check(
    flakyOrder !== undefined && retried.body.id === flakyOrder.id,
    `the replay carries the id of that one order (${flakyOrder?.id})`,
    String(retried.body.id),
  );
  explain("The server finished the order although its client had gone. The retry got the stored response,");
  explain("with the order id the client never saw: one order, not two.");

  step("3. 20 concurrent duplicates of a new order");
  const burst: Attempt = { key: "order-3", tenant: "acme", order: { item: "cake", quantity: 20 } };
  print(`   → 20 × POST /orders  Idempotency-Key: ${burst.key}, all at once, 10 to A and 10 to B`);
  const replies = await Promise.all(
    Array.from({ length: 20 }, (_, i) => postOrder((i % 2 ? b : a).url, burst)),
  );
  const ran = replies.filter((r) => r.status === 201 && !isReplay(r));
  const conflicts = replies.filter((r) => r.status === 409);
  const replays = replies.filter((r) => r.status === 201 && isReplay(r));
  const other = replies.length - ran.length - conflicts.length - replays.length;
  print(
    `   ← ${ran.length} × 201 Created, ${conflicts.length} × 409 Conflict, ${replays.length} × 201 replayed` +
      (other > 0 ? `, ${other} × something else` : ""),
  );
  check(ran.length === 1, "exactly one request ran the handler", String(ran.length));
  check(other === 0, "every other one got 409 or the replay", `${other} other answers`);
  check(
    conflicts.every((r) => isProblem(r) && r.body.type === "urn:idempotency:problem:in-progress"),
    "each 409 is application/problem+json, type urn:idempotency:problem:in-progress",
  );
  check(
    conflicts.every((r) => /^[1-9]\d*$/.test(r.headers.get("retry-after") ?? "")),
    "each 409 has Retry-After: a whole number of seconds",
  );
  check(
    replays.every((r) => r.text === ran[0]?.text),
    "each replay has the body of the request that ran, byte for byte",
  );
  checkOrderCount("acme", "order-3", 1);
  explain(
    "One request ran. The duplicates that arrived while it was charging were told to retry later (409);",
  );
  explain("any that arrived after it finished got its stored response. Either way nobody was charged twice.");

  step("4. The same key with a different body");
  const reused: Attempt = { key: "order-1", tenant: "acme", order: { item: "tea", quantity: 5 } };
  showRequest(a, reused);
  const refused = await postOrder(a.url, reused);
  showReply(refused);
  checkProblem(refused, 422, "key-reused");
  checkOrderCount("acme", "order-1", 1);
  explain("A key names one request. Reusing it for another is refused, instead of running the new order or");
  explain("answering with the old one.");

  step("5. Two tenants, one key");
  const acme: Attempt = { key: "order-5", tenant: "acme", order: { item: "bagel", quantity: 3 } };
  const globex: Attempt = { ...acme, tenant: "globex" };
  showRequest(a, acme);
  const acmeReply = await postOrder(a.url, acme);
  showReply(acmeReply);
  showRequest(b, globex);
  const globexReply = await postOrder(b.url, globex);
  showReply(globexReply);
  checkCreated(acmeReply, false, "acme: ");
  checkCreated(globexReply, false, "globex: ");
  check(
    acmeReply.body.id !== globexReply.body.id,
    "two different order ids",
    `${acmeReply.body.id} and ${globexReply.body.id}`,
  );
  checkOrderCount("acme", "order-5", 1);
  checkOrderCount("globex", "order-5", 1);
  explain("The scope (the tenant on req.user) is part of each record's identity: tenants that pick the same");
  explain("key never see each other's responses. The demo's stand-in authentication reads the tenant from");
  explain("X-Tenant-Id; a real service takes it from verified credentials, as a client-chosen header would");
  explain("let one tenant name another and read its replays.");

  step("6. A crashed request taken over after its lease");
  const doomed: Attempt = { key: "order-6", tenant: "acme", order: { item: "scone", quantity: 4 } };
  const aCharging = a.waitFor(/^charging .*key order-6\)/);
  showRequest(a, doomed);
  const lost = postOrder(a.url, doomed).then(
    (reply) => `an answer: ${reply.status}`,
    () => "no answer",
  );
  showServer(a, await aCharging);
  await a.crash();
  print(`   process A is killed with SIGKILL in the middle of the request`);
  check((await lost) === "no answer", "the client's connection to A failed without an answer", await lost);
  print("   the client retries at process B at once:");
  const takeover = b.waitFor(/^took over /, 20_000);
  showRequest(b, doomed);
  let reply = await postOrder(b.url, doomed);
  showReply(reply);
  checkProblem(reply, 409, "in-progress");
  checkRetryAfter(reply);
  // A's lease is still running: B answers 409 until it ends. The client keeps retrying as Retry-After asks.
  for (let attempt = 0; reply.status === 409 && attempt < 10; attempt += 1) {
    const waitSeconds = Number(reply.headers.get("retry-after") ?? 1);
    print(`   the client waits ${waitSeconds} s, as Retry-After asks, and retries at B:`);
    await delay(waitSeconds * 1000);
    showRequest(b, doomed);
    reply = await postOrder(b.url, doomed);
    if (reply.status === 409) showReply(reply);
  }
  showServer(b, await takeover);
  showReply(reply);
  checkCreated(reply, false);
  const rows = checkOrderCount("acme", "order-6", 1);
  check(rows[0]?.created_by === "B", "created by process B", rows[0]?.created_by);
  explain(
    `A's claim kept the key until its ${LEASE_MS / 1000} s lease ran out; then B ran the order once. A crash never`,
  );
  explain(`wedges a key. (Use onLeaseExpired: "conflict" for handlers that must never run a second time.)`);
}

function summary(): void {
  const orders = readOrders();
  step("Summary");
  print(`   ${requestsSent()} requests sent; ${orders.length} orders created (the side effects)`);
  print("   the orders table, written by both processes into the one SQLite file:");
  print(dim("     id  tenant  key      item    quantity  created by"));
  for (const o of orders) {
    print(
      `     ${String(o.id).padEnd(4)}${o.tenant.padEnd(8)}${o.idempotency_key.padEnd(9)}${o.item.padEnd(8)}` +
        `${String(o.quantity).padEnd(10)}${o.created_by}`,
    );
  }
  check(orders.length === 6, "6 orders: one for each tenant and key that ran", String(orders.length));
}

// ---- running it, and cleaning up on every way out ---------------------------------------------------------

async function cleanUp(): Promise<void> {
  await Promise.all(servers.map((server) => server.stop()));
  rmSync(dir, { recursive: true, force: true });
}

// Ctrl-C, a kill, or any exit that skips cleanUp(): stop the servers at once and remove the directory. (If the
// demo itself is killed with SIGKILL, the servers still exit by themselves, as their IPC channel closes.)
process.on("exit", () => {
  for (const server of servers) server.killNow();
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
});
process.on("SIGINT", () => {
  print("\nInterrupted: stopping the servers and removing the temporary directory.");
  process.exit(130);
});
process.on("SIGTERM", () => process.exit(143));

async function main(): Promise<number> {
  const startedAt = Date.now();
  print(bold("The @idempotency demo: an Express orders API on SqliteStore"));
  print(`   two server processes, A and B, share one SQLite file: ${dbPath}`);
  print(`   each order is charged for ${CHARGE_MS} ms; the idempotency lease is ${LEASE_MS} ms`);
  const env = { DB_PATH: dbPath, LEASE_MS: String(LEASE_MS), CHARGE_MS: String(CHARGE_MS) };
  try {
    const a = new ServerProcess("A", env);
    const b = new ServerProcess("B", env);
    servers.push(a, b);
    await Promise.all([a.ready, b.ready]);
    print(`   A listens on ${a.url}, B on ${b.url}`);
    await demo(a, b);
    summary();
  } catch (error) {
    failures.push(`${stepTitle || "start-up"}: stopped by ${error instanceof Error ? error.message : error}`);
    print(`   ${red(`✗ FAILED: ${failures.at(-1)}`)}`);
  } finally {
    await cleanUp();
  }
  const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
  print();
  if (failures.length === 0) {
    print(green(`All ${checks} checks held: every step behaved as the contract says (${seconds} s).`));
    return 0;
  }
  print(red(`The demo failed (${seconds} s):`));
  for (const failure of failures) print(red(`   - ${failure}`));
  return 1;
}

process.exit(await main());
