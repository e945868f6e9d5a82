// One orders server process. The demo starts two of them (A and B) on one SQLite file: the idempotency
// records and the orders live in the same database, so both processes see the same keys and the same orders.
//
// Run on its own: DB_PATH=demo.db PORT=3000 tsx src/server.ts
import { setTimeout as delay } from "node:timers/promises";
import { idempotency, notStarted } from "@idempotency/express";
import { SqliteStore } from "@idempotency/sqlite";
import Database from "better-sqlite3";
import express from "express";

const dbPath = process.env.DB_PATH ?? "demo.db";
const port = Number(process.env.PORT ?? 0);
const leaseMs = Number(process.env.LEASE_MS ?? 30_000);
const chargeMs = Number(process.env.CHARGE_MS ?? 500); // how long the simulated payment takes
const serverName = process.env.SERVER_NAME ?? `pid ${process.pid}`;

const db = new Database(dbPath);
// The idempotency key is kept on the order so that the demo can count orders per key.
db.exec(`CREATE TABLE IF NOT EXISTS orders (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  item TEXT NOT NULL,
  quantity INTEGER NOT NULL,
  created_by TEXT NOT NULL
)`);
const insertOrder = db.prepare(
  "INSERT INTO orders (tenant, idempotency_key, item, quantity, created_by) VALUES (?, ?, ?, ?, ?)",
);

// The store uses the application's connection (it sets WAL mode and a busy timeout on it).
const store = new SqliteStore({ database: db });

/** Who sent a request. Here only the tenant, as the demo's stand-in authentication below reads it. */
interface DemoUser {
  tenant: string;
}

declare global {
  namespace Express {
    interface Request {
      /** Set by `demoAuthentication`, which every route of this server is behind. */
      user: DemoUser;
    }
  }
}

/**
 * DEMO ONLY, a stand-in for real authentication: it believes the X-Tenant-Id header, so that the scripted
 * client can play two tenants without any credentials. Never do this in a service: a header the client
 * chooses lets one tenant name another and read its replayed responses. Put your real authentication here
 * (a session, a JWT, an API key) and let it set `req.user` from what it verified.
 */
const demoAuthentication: express.RequestHandler = (req, res, next) => {
  const tenant = req.get("x-tenant-id");
  if (!tenant) {
    res.status(401).json({ error: "the demo's stand-in authentication needs an X-Tenant-Id header" });
    return;
  }
  req.user = { tenant };
  next();
};

const guard = idempotency({
  store,
  scope: (request) => (request.native as express.Request).user.tenant, // each tenant has its own keys
  required: true,
  leaseMs, // the demo uses a short lease so that a crashed request frees its key within seconds
  onEvent(event) {
    if (event.type === "completed") console.log(`stored the ${event.status} response for replay`);
    if (event.type === "claimed" && event.takeover) console.log("took over a key whose lease had expired");
  },
});

const app = express();
app.use(demoAuthentication); // before the guard, which scopes keys by the req.user it sets

app.post("/orders", guard, express.json(), async (req, res) => {
  const { item, quantity = 1 } = (req.body ?? {}) as { item?: unknown; quantity?: unknown };
  if (typeof item !== "string" || !Number.isInteger(quantity)) {
    notStarted(req); // nothing happened: a corrected retry with the same key may run
    res.status(400).json({ error: 'send {"item": string, "quantity"?: integer}' });
    return;
  }
  const { tenant } = req.user;
  const key = req.get("idempotency-key") ?? "";
  console.log(`charging ${tenant} for ${quantity} x ${item} (key ${key})`);
  await delay(chargeMs); // the payment provider at work: duplicates arriving now overlap with this request
  const id = Number(insertOrder.run(tenant, key, item, quantity, serverName).lastInsertRowid);
  console.log(`created order ${id}`);
  res.status(201).location(`/orders/${id}`).json({ id, tenant, item, quantity });
});

const server = app.listen(port, "127.0.0.1", () => {
  const address = server.address();
  const actualPort = typeof address === "object" && address ? address.port : port;
  console.log(`listening on http://127.0.0.1:${actualPort} (pid ${process.pid}, database ${dbPath})`);
});

function shutdown(): void {
  server.close();
  server.closeAllConnections();
  db.close();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
process.on("disconnect", shutdown); // started by the demo, which has gone away
