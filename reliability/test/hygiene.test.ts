/**
 * Replay hygiene: requests carry Authorization, Cookie, Proxy-Authorization, a secret-looking custom header
 * and a canary in the body; the handler answers with two Set-Cookie, WWW-Authenticate, Authorization and
 * Proxy-Authenticate, each holding a fresh secret. The replay carries none of the credential headers and
 * every other header the handler set, byte for byte; and none of those secrets, nor anything of the request
 * but its fingerprint's hash, is anywhere in the store: the SQLite file's raw bytes and its rows, every Redis
 * key and hash field, every PostgreSQL row, and every argument the engine handed a MemoryStore and what the
 * store holds (read inside the server process, where the records live). On every binding and every store.
 */
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { decodeResponse } from "@idempotency/core";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STORES, StoreFixture } from "./support/fixture.js";
import { SEED } from "./support/random.js";
import { report } from "./support/report.js";
import { BINDINGS, type Binding, type Reply, ServerProcess, send } from "./support/servers.js";

/** Never replayed by default (docs/http-contract.md, "What is replayed"). */
const CREDENTIAL_HEADERS = [
  "set-cookie",
  "www-authenticate",
  "authorization",
  "proxy-authenticate",
  "authentication-info",
  "proxy-authentication-info",
];
/** Not the handler's: framing, connection and date, which every response gets afresh. */
const PER_RESPONSE = ["date", "connection", "keep-alive", "content-length", "transfer-encoding"];
const IDENTITY = /^[0-9a-f]{64}$/;

/** The header fields of a reply as [lower-case name, value] pairs, values exactly as received, sorted. */
function fields(reply: Reply, without: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < reply.rawHeaders.length; i += 2) {
    const name = (reply.rawHeaders[i] as string).toLowerCase();
    if (!without.includes(name)) out.push([name, reply.rawHeaders[i + 1] as string]);
  }
  return out.sort(([a, x], [b, y]) => a.localeCompare(b) || x.localeCompare(y));
}

/** A request's credentials and secrets, each value unique to it. */
function requestSecrets() {
  const canary = () => `canary${randomUUID().replaceAll("-", "")}`;
  return {
    headers: {
      authorization: `Bearer ${canary()}`,
      cookie: `sid=${canary()}; theme=dark`,
      "proxy-authorization": `Basic ${canary()}`,
      "x-api-secret": canary(),
      "x-canary": canary(),
    },
    bodySecret: canary(),
  };
}

/** The secrets in header values: every value, and each 32-hex-digit token inside one. */
function secretsIn(values: string[]): string[] {
  return values.flatMap((value) => [value, ...(value.match(/[0-9a-f]{32}/g) ?? [])]);
}

/** Which of `secrets` occur in `bytes`, as text or base64-encoded at any alignment. */
function found(bytes: Buffer, secrets: string[]): string[] {
  const text = bytes.toString("latin1");
  const base64 = bytes.toString("base64");
  const base64Text = Buffer.from(text.replace(/[^A-Za-z0-9+/=]/g, "")).toString("latin1");
  return secrets.filter((secret) => {
    if (text.includes(secret)) return true;
    // The middle of the secret's base64 at each of the 3 byte alignments, free of its neighbours' bits.
    return [0, 1, 2].some((shift) => {
      const encoded = Buffer.concat([Buffer.alloc(shift), Buffer.from(secret)]).toString("base64");
      const middle = encoded.slice(4, encoded.length - 4);
      return base64.includes(middle) || base64Text.includes(middle);
    });
  });
}

interface RawRecord {
  /** Where it is, as the store names it. */
  where: string;
  key: string;
  /** Every byte of the record as stored: columns, fields, values. */
  raw: Buffer;
  response: Buffer | null;
}

describe.each(STORES)("replay hygiene on one %s store", (storeKind) => {
  let fixture: StoreFixture;
  const servers = new Map<Binding, ServerProcess>();
  /** Every secret any request of this store sent or any original response carried. */
  const secrets: string[] = [];
  let keysSent = 0;

  beforeAll(async () => {
    fixture = await StoreFixture.open(storeKind, "hygiene");
    await Promise.all(
      BINDINGS.map(async (binding) => {
        servers.set(
          binding,
          await ServerProcess.start({ binding, ...fixture.config(), keepStoreCalls: storeKind === "memory" }),
        );
      }),
    );
  });

  afterAll(async () => {
    await Promise.all([...servers.values()].map((server) => server.stop()));
    await fixture?.close();
  });

  /** Every record in the store, read raw, beside the server's own view for MemoryStore. */
  async function rawRecords(): Promise<{ records: RawRecord[]; rawBytes: Buffer[] }> {
    if (storeKind === "sqlite") {
      const files = [fixture.sqlitePath, `${fixture.sqlitePath}-wal`].filter((path) => existsSync(path));
      const db = new Database(fixture.sqlitePath, { readonly: true });
      const rows = db.prepare("SELECT * FROM idempotency_records").all() as Array<Record<string, unknown>>;
      db.close();
      return {
        rawBytes: files.map((path) => readFileSync(path)),
        records: rows.map((row) => ({
          where: "idempotency_records",
          key: row.key as string,
          raw: Buffer.concat(Object.values(row).map((value) => toBytes(value))),
          response: (row.response as Buffer | null) ?? null,
        })),
      };
    }
    if (storeKind === "redis") {
      const client = (fixture.redis as NonNullable<StoreFixture["redis"]>).client();
      const records: RawRecord[] = [];
      for (const name of await client.keysBuffer("*")) {
        expect(await client.type(name)).toBe("hash");
        const hash = await client.hgetallBuffer(name);
        const raw = Buffer.concat([
          name,
          ...Object.entries(hash).flatMap(([field, value]) => [Buffer.from(field), value]),
        ]);
        const key = name.toString("latin1");
        expect(key.startsWith("idempotency:")).toBe(true);
        records.push({
          where: key,
          key: key.slice("idempotency:".length),
          raw,
          response: hash.response?.length ? hash.response : null,
        });
      }
      client.disconnect();
      return { records, rawBytes: [] };
    }
    if (storeKind === "postgres") {
      const { rows } = await (fixture.postgres as NonNullable<StoreFixture["postgres"]>).query(
        `SELECT * FROM ${fixture.postgresTable}`,
      );
      return {
        rawBytes: [],
        records: rows.map((row: Record<string, unknown>) => ({
          where: fixture.postgresTable,
          key: row.key as string,
          raw: Buffer.concat(Object.values(row).map((value) => toBytes(value))),
          response: (row.response as Buffer | null) ?? null,
        })),
      };
    }
    // MemoryStore: its records live in the server processes; each answers with every argument its store calls
    // received and what MemoryStore.get answers for every key they named.
    const records: RawRecord[] = [];
    const rawBytes: Buffer[] = [];
    for (const [binding, server] of servers) {
      const dump = await server.storeCalls();
      rawBytes.push(Buffer.from(JSON.stringify(dump.calls)));
      for (const call of dump.calls)
        for (const arg of call.args)
          if (arg && typeof arg === "object" && "base64" in arg)
            rawBytes.push(Buffer.from((arg as { base64: string }).base64, "base64"));
      for (const { key, record } of dump.records) {
        if (record === null) continue;
        const response = typeof record.response === "string" ? Buffer.from(record.response, "base64") : null;
        records.push({
          where: `${binding}'s MemoryStore`,
          key,
          raw: Buffer.concat([
            Buffer.from(JSON.stringify({ ...record, response: null })),
            response ?? Buffer.alloc(0),
          ]),
          response,
        });
      }
    }
    return { records, rawBytes };
  }

  it.each(BINDINGS)(
    "%s: the replay carries no Set-Cookie, WWW-Authenticate, Authorization or Proxy-Authenticate and every other header byte for byte; no credential, request header or request body is in the store",
    async (binding) => {
      const server = servers.get(binding) as ServerProcess;
      const key = `${storeKind}-${binding}-hygiene-${SEED}`;
      const tenant = `tenant-${binding}`;
      const first = requestSecrets();
      const body = JSON.stringify({ item: "apple", card: first.bodySecret });
      const original = await send({ port: server.port, key, tenant, body, headers: first.headers });
      const retry = await send({ port: server.port, key, tenant, body, headers: first.headers });
      // A retry with other credentials (a rotated token, a new session) is the same request: the same replay.
      const rotated = requestSecrets();
      const rotatedRetry = await send({ port: server.port, key, tenant, body, headers: rotated.headers });
      keysSent++;

      expect(original.status, original.body.toString("utf8")).toBe(201);
      expect(original.headers["idempotent-replayed"]).toBeUndefined();
      const ledgerRows = fixture.ledger.of(key);
      expect(ledgerRows).toHaveLength(1);
      expect(original.body.toString("utf8")).toBe(ledgerRows[0]?.body);
      // The original did carry every credential header, two cookies among them.
      const credentials = fields(original, []).filter(([name]) => CREDENTIAL_HEADERS.includes(name));
      expect(credentials.map(([name]) => name)).toEqual([
        "authentication-info",
        "authorization",
        "proxy-authenticate",
        "proxy-authentication-info",
        "set-cookie",
        "set-cookie",
        "www-authenticate",
      ]);
      secrets.push(
        ...secretsIn(credentials.map(([, value]) => value)),
        ...secretsIn([...Object.values(first.headers), ...Object.values(rotated.headers)]),
        ...[first.bodySecret, rotated.bodySecret].map((secret) => secret),
      );

      const expected = fields(original, [...PER_RESPONSE, ...CREDENTIAL_HEADERS]);
      expect(expected.map(([name]) => name)).toEqual(
        expect.arrayContaining([
          "cache-control",
          "content-type",
          "location",
          "x-execution",
          "x-latin1",
          "x-twice",
        ]),
      );
      for (const replay of [retry, rotatedRetry]) {
        expect(replay.status).toBe(201);
        expect(replay.headers["idempotent-replayed"]).toBe("true");
        expect(replay.body.equals(original.body)).toBe(true);
        for (const name of CREDENTIAL_HEADERS) expect(replay.headers[name], name).toBeUndefined();
        expect(fields(replay, [...PER_RESPONSE, "idempotent-replayed"])).toEqual(expected);
      }
      expect(fixture.ledger.of(key)).toHaveLength(1);

      // The store, raw: one record per key sent so far, keyed by a SHA-256 identity, holding no secret.
      const { records, rawBytes } = await rawRecords();
      expect(records).toHaveLength(keysSent);
      const leaks: string[] = [];
      for (const bytes of rawBytes) leaks.push(...found(bytes, secrets).map((s) => `raw storage: ${s}`));
      for (const record of records) {
        expect(record.key).toMatch(IDENTITY);
        leaks.push(...found(record.raw, secrets).map((s) => `${record.where}: ${s}`));
        expect(record.response, record.where).not.toBeNull();
        const stored = decodeResponse(record.response as Buffer);
        expect(stored.headers.filter(([name]) => CREDENTIAL_HEADERS.includes(name))).toEqual([]);
        const decoded = Buffer.from(
          JSON.stringify(stored.headers) + Buffer.from(stored.body ?? []).toString("latin1"),
          "latin1",
        );
        leaks.push(...found(decoded, secrets).map((s) => `${record.where}, decoded: ${s}`));
      }
      // This request's record holds exactly the headers its replay carried.
      const mine = records.find((record) => {
        const stored = decodeResponse(record.response as Buffer);
        return stored.headers.some(
          ([name, value]) => name === "x-execution" && value === ledgerRows[0]?.execution,
        );
      });
      expect(mine, "the record of this request").toBeDefined();
      const storedHeaders = decodeResponse(mine?.response as Buffer).headers.filter(
        ([name]) => !PER_RESPONSE.includes(name),
      );
      expect([...storedHeaders].sort(([a, x], [b, y]) => a.localeCompare(b) || x.localeCompare(y))).toEqual(
        expected,
      );

      report(
        `hygiene/${storeKind}/${binding}`,
        `seed ${SEED}; 1 request with Authorization, Cookie, Proxy-Authorization, X-Api-Secret, X-Canary and a ` +
          `body secret, answered with ${credentials.length} credential header fields, then 2 retries (the second with ` +
          `rotated credentials): ${[original, retry, rotatedRetry].map((r) => `${r.status}${r.headers["idempotent-replayed"] ? "r" : ""}`).join(" ")}; ` +
          `replays carry 0 credential headers and ${expected.length} header fields byte for byte; ` +
          `${records.length} raw records read (${rawBytes.reduce((n, b) => n + b.length, 0)} raw bytes beside them), ` +
          `${secrets.length} secrets searched, ${leaks.length} found`,
        { requests: 3, executions: 1, records: records.length },
      );
      expect(leaks).toEqual([]);
      expect(server.stderr).toBe("");
    },
  );
});

function toBytes(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value === null || value === undefined) return Buffer.alloc(0);
  if (value instanceof Date) return Buffer.from(value.toISOString());
  return Buffer.from(String(value), "latin1");
}
