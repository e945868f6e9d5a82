// A child process for the multi-process tests: plain JavaScript that imports the BUILT packages by name, so it
// runs exactly what users get. The parent drives it over the fork IPC channel.
//
//   node engine-worker.mjs storm <file> <executionsDir> <workerId> <keys>
//     opens one SqliteStore, says "ready", and on each "go" fires requests for keys `<prefix>-0` to
//     `<prefix>-<keys - 1>` at once through the core engine, reporting every outcome; the handler leaves one
//     file per execution in <executionsDir>.
//   node engine-worker.mjs run-storm <file> <executionsDir> <workerId> <keys>
//     the same through the function API, `idempotency.run(key, fn, { waitMs })`: duplicates wait and get
//     the first call's result.
//   node engine-worker.mjs hold <file> <executionsDir> <workerId> <leaseMs>
//     claims the key "held" and never finishes (the engine keeps renewing the lease): the parent kills it.
//   node engine-worker.mjs takeover <file> <executionsDir> <workerId> <leaseMs>
//     sends the request for "held" once and reports what happened.
//   node engine-worker.mjs churn <file>
//     claims and completes records with 256 KiB responses in a loop until killed, saying "busy" after 20.
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createIdempotency } from "@idempotency/core";
import { SqliteStore } from "@idempotency/sqlite";

const [mode, file, executionsDir, workerId, extra] = process.argv.slice(2);
const send = (message) => new Promise((resolve) => process.send(message, resolve));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function request(key) {
  const body = new TextEncoder().encode(JSON.stringify({ key, amount: 100 }));
  const headers = new Headers({ "idempotency-key": key, "content-type": "application/json" });
  return { method: "POST", path: "/payments", query: "", headers, body: async () => body, native: null };
}

function engine(store, events, leaseMs) {
  return createIdempotency({
    store,
    scope: "global",
    ...(leaseMs ? { leaseMs } : {}),
    onEvent: (event) =>
      events.push({ type: event.type, takeover: event.takeover, error: event.error?.message }),
  });
}

/** Runs one request to its end; the handler's side effect is a file named after the key. */
async function fire(idempotency, key, handlerMs) {
  const decision = await idempotency.handle(request(key));
  if (decision.action === "execute") {
    writeFileSync(`${executionsDir}/${key}.${workerId}.${randomUUID()}`, "");
    await sleep(handlerMs);
    const body = new TextEncoder().encode(JSON.stringify({ key, executedBy: workerId }));
    decision.execution.start(201, { "content-type": "application/json" });
    const sent = Buffer.concat([decision.execution.write(body), await decision.execution.end()]);
    return { key, kind: "executed", status: 201, body: sent.toString("utf8") };
  }
  if (decision.action === "respond") {
    const { status, headers, body } = decision.response;
    return {
      key,
      kind: decision.replayed ? "replayed" : "answered",
      status,
      headers: Object.fromEntries(headers),
      body: Buffer.from(body).toString("utf8"),
    };
  }
  return { key, kind: "passed" };
}

/** Runs one job through the function API; its side effect is a file named after the key. */
async function runOnce(idempotency, key) {
  const result = await idempotency.run(
    key,
    async () => {
      writeFileSync(`${executionsDir}/${key}.${workerId}.${randomUUID()}`, "");
      await sleep(30);
      return { key, executedBy: workerId };
    },
    { fingerprint: key, waitMs: 30_000 },
  );
  return { key, kind: "returned", status: 0, body: JSON.stringify(result) };
}

async function storm(useRun) {
  const store = new SqliteStore({ path: file });
  const events = [];
  const idempotency = engine(store, events);
  const one = useRun ? (key) => runOnce(idempotency, key) : (key) => fire(idempotency, key, 30);
  await store.get("warm-up"); // opens the file and creates the schema before the race starts
  process.on("message", async (message) => {
    if (message.type === "go") {
      events.length = 0;
      const keys = Array.from({ length: Number(extra) }, (_, i) => `${message.prefix}-${i}`);
      const settled = await Promise.allSettled(keys.map(one));
      const outcomes = settled.map((s) => (s.status === "fulfilled" ? s.value : null));
      const errors = settled.flatMap((s) =>
        s.status === "rejected" ? [String(s.reason?.stack ?? s.reason)] : [],
      );
      await send({ type: "result", prefix: message.prefix, outcomes, errors, events });
    } else if (message.type === "exit") {
      await store.close();
      process.disconnect();
    }
  });
  await send({ type: "ready" });
}

async function hold() {
  const store = new SqliteStore({ path: file });
  const events = [];
  const decision = await engine(store, events, Number(extra)).handle(request("held"));
  if (decision.action !== "execute") throw new Error(`expected to claim "held", got ${decision.action}`);
  writeFileSync(`${executionsDir}/held.${workerId}.${randomUUID()}`, "");
  await send({ type: "claimed", events });
  setInterval(() => {}, 60_000); // the handler never finishes; the engine keeps renewing the lease
}

async function takeover() {
  const store = new SqliteStore({ path: file });
  const events = [];
  const outcome = await fire(engine(store, events, Number(extra)), "held", 0);
  await store.close();
  await send({ type: "result", outcome, events });
  process.disconnect();
}

async function churn() {
  const store = new SqliteStore({ path: file });
  const response = new Uint8Array(256 * 1024).fill(0x61);
  for (let i = 0; ; i++) {
    const key = `churn-${i}`;
    const token = randomUUID();
    await store.begin(key, {
      token,
      fingerprint: "f",
      leaseMs: 60_000,
      ttlMs: 600_000,
      allowTakeover: false,
    });
    await store.complete(key, token, response, 600_000);
    if (i === 20) await send({ type: "busy" });
  }
}

const modes = { storm: () => storm(false), "run-storm": () => storm(true), hold, takeover, churn };
modes[mode]().catch((error) => {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1);
});
