/**
 * Fuzzed HTTP input: fast-check, seeded from the run's SEED, thousands of requests over raw sockets to one
 * server process per binding (Express, Koa, Hono, Fastify) on SQLite stores, each case sent to all four.
 *
 * - keys: lengths, control characters, Latin-1 and UTF-8 bytes, quoting and escapes, sf-string edge cases,
 *   several header fields, every spelling of the field name;
 * - bodies: JSON objects (retried byte for byte, re-spaced and changed), JSON primitives, invalid JSON,
 *   deeply nested JSON, bodies at and over `maxRequestBytes`, binary, other content types;
 * - framing: chunked with extensions and trailers (one of them a second Idempotency-Key), an oversized chunked
 *   body, a Content-Length shorter than the body, extra bytes after the body (garbage, or a pipelined
 *   request), Content-Length with Transfer-Encoding, invalid Content-Length fields, bad chunk sizes, and a
 *   body shorter than its Content-Length left open until the server's request timeout;
 * - methods and request targets.
 *
 * The oracle is exact where the HTTP contract decides (400 invalid-key, 413 request-too-large, 422, the
 * byte-exact replay, pass-through without a key) and a set of 4xx where Node's parser or the framework's body
 * parser decides first. Every case also checks: no 5xx, an answer within the deadline, the server process
 * alive with nothing on stderr, and the ledger: a request the middleware or a parser refused never ran the
 * handler, and a key ran at most once. After the fuzzing, every record in the stores is decoded and checked
 * against the ledger, and every stored response is replayed again, byte for byte.
 *
 * Replay a failure with `RELIABILITY_SEED=<seed> pnpm test:reliability` (the seed is printed with it).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeResponse } from "@idempotency/core";
import { SqliteStore } from "@idempotency/sqlite";
import Database from "better-sqlite3";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ledger } from "./support/ledger.js";
import { SEED } from "./support/random.js";
import {
  encodeRequest,
  exchange,
  type Framing,
  field,
  type RawExchange,
  type RawRequest,
  type RawResponse,
} from "./support/raw-http.js";
import { report, tally } from "./support/report.js";
import { BINDINGS, type Binding, ServerProcess } from "./support/servers.js";

const MAX_REQUEST_BYTES = 16_384;
/** The servers' `requestTimeout`: a request that has not fully arrived by then gets 408 and is closed. */
const REQUEST_TIMEOUT_MS = 1_000;
/** An answer later than this is a hang (generous: 2 loaded cores). */
const DEADLINE_MS = 10_000;
const RUNS = { keys: 350, bodies: 200, framing: 150, open: 4, targets: 200 };

const PROBLEM = {
  invalidKey: "urn:idempotency:problem:invalid-key",
  tooLarge: "urn:idempotency:problem:request-too-large",
  keyReused: "urn:idempotency:problem:key-reused",
};
const JSON_TYPE = "application/json";

// ---------------------------------------------------------------------------------------------------------
// The oracle's model of the contract, written from docs/http-contract.md, not from the core's code.

/** Bytes Node's HTTP parser refuses in a field value (400 before any application code): C0 but HTAB, DEL. */
const nodeRefusesInValue = (value: string) => someCode(value, (c) => (c < 0x20 && c !== 0x09) || c === 0x7f);

/** Whether a character of `text` has a code unit that `test` accepts. */
function someCode(text: string, test: (code: number) => boolean): boolean {
  for (let i = 0; i < text.length; i++) if (test(text.charCodeAt(i))) return true;
  return false;
}
/** Node's `maxHeaderSize` (16 KiB); the generators stay well below it or well above it. */
const NODE_MAX_HEADER_BYTES = 16_384;

type KeyVerdict = { kind: "missing" } | { kind: "invalid" } | { kind: "valid"; key: string };

/** The key the contract reads from these field values (each as Node hands it on: one char per byte). */
function contractKey(values: string[]): KeyVerdict {
  if (values.length === 0) return { kind: "missing" };
  if (values.length > 1) return { kind: "invalid" }; // two fields: more than one value
  const value = (values[0] as string).replace(/^[ \t]+|[ \t]+$/g, "");
  let key = "";
  if (value.startsWith('"')) {
    let i = 1;
    for (;;) {
      if (i >= value.length) return { kind: "invalid" }; // not terminated
      const c = value[i] as string;
      if (c === '"') {
        if (i !== value.length - 1) return { kind: "invalid" }; // parameters, a list, anything after it
        break;
      }
      if (c === "\\") {
        const next = value[i + 1];
        if (next !== '"' && next !== "\\") return { kind: "invalid" };
        key += next;
        i += 2;
        continue;
      }
      const code = c.charCodeAt(0);
      if (code < 0x20 || code > 0x7e) return { kind: "invalid" };
      key += c;
      i++;
    }
  } else {
    for (const c of value) {
      const code = c.charCodeAt(0);
      if (code < 0x21 || code > 0x7e || c === '"' || c === ",") return { kind: "invalid" };
    }
    key = value;
  }
  if (key.length < 1 || key.length > 255) return { kind: "invalid" };
  return { kind: "valid", key };
}

/** Another spelling of the same key: quoted when the original was raw, raw when it can be, else as is. */
function otherSpelling(key: string, original: string): string {
  const rawSafe = /^[\x21-\x7e]+$/.test(key) && !/[",]/.test(key);
  if (rawSafe && original.trim().startsWith('"')) return key;
  return `"${key.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

const isJsonType = (type: string | undefined) =>
  type !== undefined && /^application\/([a-z.-]+\+)?json\s*(;|$)/i.test(type);

function parsesAsJson(body: string): unknown {
  try {
    return { value: JSON.parse(body) };
  } catch {
    return undefined;
  }
}

/**
 * What a request the middleware lets through gets from the framework's own body parser and the handler:
 * 201 (the handler ran), or the parser's refusal. The parsers differ (Express's and Koa's JSON parsers take
 * only objects and arrays, Hono's handler parses any JSON text, Fastify refuses media types it has no parser
 * for with 415 and an empty JSON body with 400), so this is a set.
 */
function frameworkAnswers(contentType: string | undefined, body: Buffer): number[] {
  if (isJsonType(contentType)) {
    if (body.length === 0) return [201, 400];
    const parsed = parsesAsJson(body.toString("utf8")) as { value: unknown } | undefined;
    if (parsed === undefined) return [400];
    return typeof parsed.value === "object" && parsed.value !== null ? [201] : [201, 400];
  }
  if (contentType === "text/plain" || body.length === 0) return [201];
  return [201, 415];
}

/** Express, Koa and Hono run the middleware before the body parser; Fastify parses first, in its own phase. */
const claimsBeforeParsing = (binding: Binding) => binding !== "fastify";

// ---------------------------------------------------------------------------------------------------------
// The servers, the ledger, and what every exchange checks.

let dir: string;
let ledger: Ledger;
const servers = new Map<Binding, ServerProcess>();
let tenants = 0;
const statuses: number[] = [];
const cases = new Map<string, number>();
let requests = 0;
let fiveXx = 0;
/** Every response the store should hold, with the request that produced it, for the final replay pass. */
const stored: Array<{ binding: Binding; request: RawRequest; original: RawResponse }> = [];

const newTenant = (binding: Binding) => `fuzz-${SEED}-${binding}-${++tenants}`;

function countCase(category: string): void {
  cases.set(category, (cases.get(category) ?? 0) + 1);
}

interface SendOptions {
  responses?: number;
  head?: boolean[];
  /** The server is expected to close the connection without a full answer (its request timeout). */
  mayTimeOut?: boolean;
}

async function send(
  binding: Binding,
  tenant: string,
  request: RawRequest,
  options: SendOptions = {},
): Promise<RawExchange> {
  const server = servers.get(binding) as ServerProcess;
  const withTenant: RawRequest = { ...request, headers: [...request.headers, ["X-Tenant", tenant]] };
  const result = await exchange(server.port, encodeRequest(withTenant), {
    deadlineMs: DEADLINE_MS,
    responses: options.responses ?? 1,
    head: options.head,
  });
  requests++;
  for (const response of result.responses) {
    statuses.push(response.status);
    if (response.status >= 500) fiveXx++;
  }
  const context = `${binding} ${tenant}: ${clip(JSON.stringify(result.responses.map(summary)))}`;
  expect(result.timedOut, `${context}: no answer within ${DEADLINE_MS} ms`).toBe(false);
  for (const response of result.responses) expect(response.status, context).toBeLessThan(500);
  expect(server.alive, `${binding} server died: ${server.stderr}`).toBe(true);
  expectQuietStderr(server);
  return result;
}

function expectQuietStderr(server: ServerProcess): void {
  expect(server.stderr === "", `${server.name} stderr: ${server.stderr}`).toBe(true);
}

function summary(response: RawResponse) {
  return {
    status: response.status,
    type: field(response, "content-type"),
    body: response.body.toString("latin1").slice(0, 300),
  };
}

function only(result: RawExchange, context: string): RawResponse {
  expect(result.responses.length, context).toBeGreaterThanOrEqual(1);
  return result.responses[0] as RawResponse;
}

function problemOf(
  response: RawResponse,
): { type: string; title: string; status: number; detail: string } | undefined {
  if (field(response, "content-type") !== "application/problem+json") return undefined;
  return JSON.parse(response.body.toString("utf8"));
}

function expectProblem(response: RawResponse, status: number, type: string, context: string): void {
  expect({ status: response.status, type: problemOf(response)?.type }, context).toEqual({ status, type });
  expect(field(response, "cache-control"), context).toBe("no-store");
  const problem = problemOf(response);
  expect(Object.keys(problem ?? {}).sort(), context).toEqual(["detail", "status", "title", "type"]);
  expect(problem?.status, context).toBe(status);
  // The detail names what the client sent, but never echoes a control character.
  expect(
    someCode(problem?.detail ?? "", (c) => c < 0x20 || c === 0x7f),
    `${context}: ${problem?.detail}`,
  ).toBe(false);
}

/** A refusal by Node's HTTP parser (or Fastify's clientError handler), never by the middleware. */
function expectParserRefusal(response: RawResponse, statusCodes: number[], context: string): void {
  expect(statusCodes, `${context}: ${JSON.stringify(summary(response))}`).toContain(response.status);
  expect(problemOf(response), context).toBeUndefined();
}

/** The handler's own first answer: 201, not replayed, naming this tenant and the execution in the ledger. */
function expectOriginal(response: RawResponse, tenant: string, context: string): void {
  expect({ status: response.status, replayed: field(response, "idempotent-replayed") }, context).toEqual({
    status: 201,
    replayed: undefined,
  });
  const body = JSON.parse(response.body.toString("utf8"));
  expect(body.tenant, context).toBe(tenant);
  expect(field(response, "x-execution"), context).toBe(body.execution);
  const executions = ledger.ofTenant(tenant);
  expect(
    executions.map((row) => row.execution),
    context,
  ).toContain(body.execution);
  expect(executions.find((row) => row.execution === body.execution)?.body, context).toBe(
    response.body.toString("utf8"),
  );
}

/** The stored answer again: same status and body bytes, `Idempotent-Replayed: true`, no credentials. */
function expectReplay(response: RawResponse, original: RawResponse, context: string): void {
  const seen = {
    status: response.status,
    replayed: field(response, "idempotent-replayed"),
    contentType: field(response, "content-type"),
    execution: field(response, "x-execution"),
    setCookie: field(response, "set-cookie"),
    wwwAuthenticate: field(response, "www-authenticate"),
  };
  expect(seen, context).toEqual({
    status: original.status,
    replayed: "true",
    contentType: field(original, "content-type"),
    execution: field(original, "x-execution"),
    setCookie: undefined,
    wwwAuthenticate: undefined,
  });
  expect(response.body.equals(original.body), `${context}: body byte for byte`).toBe(true);
}

const executionsOf = (tenant: string) => ledger.ofTenant(tenant).length;

/** Runs one case on every binding at once. */
async function onEveryBinding(run: (binding: Binding) => Promise<void>): Promise<void> {
  await Promise.all(BINDINGS.map((binding) => run(binding)));
}

/** Runs a property with the run's seed; a failure names the seed to replay it with, and the counterexample. */
async function property<T>(
  name: string,
  offset: number,
  runs: number,
  arbitrary: fc.Arbitrary<T>,
  predicate: (value: T) => Promise<void>,
) {
  const seed = (SEED + offset) | 0;
  const details = await fc.check(fc.asyncProperty(arbitrary, predicate), { seed, numRuns: runs });
  if (details.failed) {
    throw new Error(
      `fuzz/${name} failed with fast-check seed ${seed}; replay with RELIABILITY_SEED=${SEED} ` +
        `(fast-check path ${JSON.stringify(details.counterexamplePath)}).\n` +
        `Counterexample: ${clip(fc.stringify(details.counterexample))}\n${clip(String(details.errorInstance))}`,
    );
  }
}

/** Keeps a 20,000-character key from burying the message. */
function clip(text: string): string {
  return text.length <= 3_000
    ? text
    : `${text.slice(0, 1_500)} …(${text.length - 3_000} characters)… ${text.slice(-1_500)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Generators. Header values and targets are Latin-1 strings (one char per byte on the wire), never CR or LF:
// those would end the field line and make another request out of the rest.

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => String.fromCharCode(from + i));
const RAW_KEY_CHARS = range(0x21, 0x7e).filter((c) => c !== '"' && c !== ",");
const rawChar = fc.constantFrom(...RAW_KEY_CHARS);
const printable = fc.constantFrom(...range(0x20, 0x7e).filter((c) => c !== '"' && c !== "\\"));
const anyByte = fc
  .integer({ min: 0, max: 255 })
  .filter((b) => b !== 0x0a && b !== 0x0d)
  .map((b) => String.fromCharCode(b));
const tricky = fc.constantFrom(
  '"',
  ",",
  "\\",
  " ",
  "\t",
  ";",
  "=",
  "\x00",
  "\x01",
  "\x1f",
  "\x7f",
  "\x80",
  "\xa0",
  "\xff",
);
/** A few characters of Unicode, as the UTF-8 bytes a client sends. */
const utf8 = fc
  .string({ unit: "grapheme", minLength: 1, maxLength: 4 })
  .map((s) => Buffer.from(s, "utf8").toString("latin1"));

const rawKey = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: rawChar, minLength: 1, maxLength: 40 }) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 250, max: 260 })
      .chain((n) => fc.string({ unit: rawChar, minLength: n, maxLength: n })),
  },
  {
    weight: 2,
    arbitrary: fc
      .array(
        fc.oneof(
          { weight: 6, arbitrary: rawChar },
          { weight: 1, arbitrary: tricky },
          { weight: 1, arbitrary: anyByte },
          { weight: 1, arbitrary: utf8 },
        ),
        { maxLength: 40 },
      )
      .map((parts) => parts.join("")),
  },
);
const quotedKey = fc
  .tuple(
    fc.array(
      fc.oneof(
        { weight: 8, arbitrary: printable },
        { weight: 2, arbitrary: fc.constantFrom('\\"', "\\\\") },
        { weight: 1, arbitrary: fc.constantFrom("\\n", "\\t", "\\u0041", "\\", '"', "\\\x01") },
        { weight: 1, arbitrary: tricky },
        { weight: 1, arbitrary: utf8 },
      ),
      { maxLength: 40 },
    ),
    fc.constantFrom('"', '"', '"', '"', ""),
    fc.constantFrom("", "", "", "", " ", "\t", ";x=1", ', "b"', ",b", "x", '"', "; "),
  )
  .map(([inner, close, trailer]) => `"${inner.join("")}${close}${trailer}`);
/** Around the length limit (255 after unquoting, so 2n + 2 raw characters when every one is escaped), past it, and past Node's header limit. */
const longKey = fc
  .tuple(
    fc.oneof(
      fc.integer({ min: 250, max: 260 }),
      fc.integer({ min: 1_000, max: 4_000 }),
      fc.integer({ min: 17_000, max: 20_000 }),
    ),
    fc.constantFrom("raw", "quoted", "escaped"),
    rawChar,
  )
  .map(([n, form, c]) =>
    form === "raw" ? c.repeat(n) : form === "quoted" ? `"${c.repeat(n)}"` : `"${'\\"'.repeat(n)}"`,
  );
const keyValue = fc
  .tuple(
    fc.constantFrom("", "", "", " ", "\t", "  \t"),
    fc.oneof(
      { weight: 3, arbitrary: rawKey },
      { weight: 3, arbitrary: quotedKey },
      { weight: 1, arbitrary: longKey },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          "",
          " ",
          '""',
          '"',
          '"\\"',
          "\\",
          ",",
          "a,",
          ",a",
          "a, b",
          '"a", "b"',
          '"a";b',
          "\x80",
          "caf\xc3\xa9",
        ),
      },
    ),
    fc.constantFrom("", "", "", " ", "\t"),
  )
  .map(([before, value, after]) => before + value + after);
const keyFieldName = fc.constantFrom(
  "Idempotency-Key",
  "idempotency-key",
  "IDEMPOTENCY-KEY",
  "IdEmPoTeNcY-kEy",
);
const keyFields = fc.oneof(
  { weight: 1, arbitrary: fc.constant([] as Array<[string, string]>) },
  {
    weight: 14,
    arbitrary: fc.tuple(fc.tuple(keyFieldName, keyValue)) as fc.Arbitrary<Array<[string, string]>>,
  },
  { weight: 2, arbitrary: fc.array(fc.tuple(keyFieldName, keyValue), { minLength: 2, maxLength: 3 }) },
);

/** A valid raw key: the body, framing and target cases are about everything but the key. */
const goodKey = fc.string({ unit: rawChar, minLength: 1, maxLength: 64 });
/** JSON member names Fastify's parser refuses on purpose (prototype poisoning) are left out, at every depth. */
const memberName = fc
  .string({ maxLength: 12 })
  .filter((name) => name !== "__proto__" && name !== "constructor" && name !== "prototype");
const jsonObject = fc
  .dictionary(memberName, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 })
  // Nested objects too: fc.jsonValue draws its own member names.
  .filter((value) => !/"(__proto__|constructor|prototype)":/.test(JSON.stringify(value))) as fc.Arbitrary<
  Record<string, unknown>
>;

/** POST /orders with this key and body; `type` null sends no Content-Type. */
const jsonRequest = (
  key: string,
  body: string | Buffer,
  framing: Framing = { kind: "length" },
  type: string | null = JSON_TYPE,
): RawRequest => ({
  method: "POST",
  target: "/orders",
  headers: [
    ["Idempotency-Key", key],
    ...(type === null ? [] : ([["Content-Type", type]] as Array<[string, string]>)),
  ],
  body: Buffer.isBuffer(body) ? body : Buffer.from(body, "utf8"),
  framing,
});

/** Body cases: what is sent, under which content type, and (for a JSON object) an equivalent and a changed body. */
type BodyCase = {
  kind: string;
  key: string;
  type: string | undefined;
  body: Buffer;
  equivalent?: string;
  changed: Buffer;
};

const padTo = (size: number) => {
  const base = JSON.stringify({ pad: "" });
  return JSON.stringify({ pad: "x".repeat(Math.max(0, size - base.length)) });
};
const invalidJson = fc
  .oneof(
    fc.string({ maxLength: 40 }),
    jsonObject
      .map((value) => JSON.stringify(value))
      .chain((text) =>
        fc.integer({ min: 1, max: Math.max(1, text.length - 1) }).map((n) => text.slice(0, n)),
      ),
    fc.constantFrom(
      "{",
      "[1,]",
      "{'a':1}",
      '{"a":01}',
      "NaN",
      '{"a":1}}',
      "tru",
      '"\\x"',
      "\u0000",
      '{"a" 1}',
    ),
  )
  .filter((text) => text.length > 0 && parsesAsJson(text) === undefined && text.trim().length > 0);
const bytes = fc.uint8Array({ minLength: 1, maxLength: 2_048 }).map((array) => Buffer.from(array));
const nested = fc
  .tuple(fc.integer({ min: 600, max: 5_000 }), fc.constantFrom("array", "object"))
  .map(([depth, shape]) =>
    shape === "array"
      ? `${"[".repeat(depth)}${"]".repeat(depth)}`
      : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`,
  );

const bodyCase: fc.Arbitrary<BodyCase> = fc
  .tuple(
    goodKey,
    fc.oneof(
      jsonObject.chain((value) =>
        fc.constantFrom(JSON_TYPE, "application/json; charset=utf-8").map((type) => {
          const text = JSON.stringify(value);
          return {
            kind: "json-object",
            type,
            body: Buffer.from(text),
            equivalent: ` ${JSON.stringify(value, null, 2)}\n`,
            changed: Buffer.from(JSON.stringify({ ...value, changed: true })),
          };
        }),
      ),
      fc.jsonValue({ maxDepth: 0 }).map((value) => ({
        kind: "json-primitive",
        type: JSON_TYPE,
        body: Buffer.from(JSON.stringify(value) ?? "null"),
        changed: Buffer.from('"changed"'),
      })),
      invalidJson.map((text) => ({
        kind: "invalid-json",
        type: JSON_TYPE,
        body: Buffer.from(text),
        changed: Buffer.from('{"changed":true}'),
      })),
      nested.map((text) => ({
        kind: "deeply-nested",
        type: JSON_TYPE,
        body: Buffer.from(text),
        changed: Buffer.from('{"changed":true}'),
      })),
      fc
        .constantFrom(MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1, MAX_REQUEST_BYTES * 2, MAX_REQUEST_BYTES * 6)
        .map((size) => ({
          kind: size > MAX_REQUEST_BYTES ? "over-limit" : "at-limit",
          type: JSON_TYPE,
          body: Buffer.from(padTo(size)),
          changed: Buffer.from('{"changed":true}'),
        })),
      bytes.chain((body) =>
        fc
          .constantFrom("application/octet-stream", undefined, "text/plain", "image/png")
          .map((type) => ({ kind: "binary", type, body, changed: Buffer.concat([body, Buffer.from([0])]) })),
      ),
      fc
        .constantFrom(JSON_TYPE, undefined, "text/plain")
        .map((type) => ({ kind: "empty", type, body: Buffer.alloc(0), changed: Buffer.from("x") })),
    ),
  )
  .map(([key, rest]) => ({ key, ...rest }) as BodyCase);

type FramingCase =
  | {
      kind: "chunked";
      key: string;
      value: Record<string, unknown>;
      sizes: number[];
      extensions: string[];
      trailers: Array<[string, string]>;
    }
  | { kind: "chunked-oversized"; key: string; value: Record<string, unknown>; sizes: number[]; extra: number }
  | { kind: "pipelined"; key: string; value: Record<string, unknown> }
  | { kind: "garbage-after"; key: string; value: Record<string, unknown>; garbage: string }
  | { kind: "short-length"; key: string; value: Record<string, unknown>; extra: number }
  | {
      kind: "malformed";
      key: string;
      value: Record<string, unknown>;
      fields: Array<[string, string]>;
      framing: Framing;
    };

/** A JSON object with at least one member, so that any proper prefix of its text is not JSON. */
const someObject = jsonObject.map((value) => ({ ...value, order: 1 }));
const framingCase: fc.Arbitrary<FramingCase> = fc.tuple(goodKey, someObject).chain(([key, value]) =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant("chunked" as const),
        key: fc.constant(key),
        value: fc.constant(value),
        sizes: fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 6 }),
        extensions: fc.array(fc.constantFrom("", "", ";a=b", ';x="y z"', ";k", ";a=1;b=2"), {
          minLength: 1,
          maxLength: 3,
        }),
        trailers: fc.subarray([
          ["X-Trailer", "v"] as [string, string],
          ["Idempotency-Key", `${key}-in-trailer`] as [string, string],
          ["X-Tenant", "someone-else"] as [string, string],
          ["Content-Type", "text/plain"] as [string, string],
        ]),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("chunked-oversized" as const),
        key: fc.constant(key),
        value: fc.constant(value),
        sizes: fc.tuple(fc.integer({ min: 512, max: 8_192 })).map((a) => [...a]),
        extra: fc.integer({ min: 1, max: 4_096 }),
      }),
    },
    { weight: 1, arbitrary: fc.constant({ kind: "pipelined" as const, key, value }) },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("garbage-after" as const),
        key: fc.constant(key),
        value: fc.constant(value),
        garbage: fc.oneof(
          fc.constantFrom("x", "GARBAGE\r\n\r\n", "}\r\n", "\x00\x01", "HTTP/1.1 200 OK\r\n\r\n", "POST\r\n"),
          fc.string({ unit: rawChar, minLength: 1, maxLength: 20 }).map((text) => `${text} \r\n`),
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("short-length" as const),
        key: fc.constant(key),
        value: fc.constant(value),
        extra: fc.integer({ min: 1, max: 12 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc
        .oneof(
          fc.constantFrom<[Array<[string, string]>, Framing]>(
            [[["Transfer-Encoding", "chunked"]], { kind: "length" }],
            [[], { kind: "length", declared: ["-1"] }],
            [[], { kind: "length", declared: ["+5"] }],
            [[], { kind: "length", declared: ["1.5"] }],
            [[], { kind: "length", declared: ["0x10"] }],
            [[], { kind: "length", declared: ["5 5"] }],
            [[["Transfer-Encoding", "gzip"]], { kind: "none" }],
            [[["Transfer-Encoding", "chunked, chunked"]], { kind: "none" }],
          ),
          fc
            .integer({ min: 1, max: 30 })
            .map((n): [Array<[string, string]>, Framing] => [
              [],
              { kind: "length", declared: [String(n), String(n + 1)] },
            ]),
          fc
            .integer({ min: 1, max: 30 })
            .map((n): [Array<[string, string]>, Framing] => [
              [],
              { kind: "length", declared: [String(n), String(n)] },
            ]),
        )
        .map(([fields, framing]) => ({ kind: "malformed" as const, key, value, fields, framing })),
    },
  ),
);

const openCase = fc.record({
  kind: fc.constantFrom("long-length", "unfinished-chunked"),
  key: goodKey,
  value: someObject,
  missing: fc.integer({ min: 1, max: 100 }),
});

const METHODS_NODE_REFUSES = ["post", "Post", "FOO", "POSTX", "GETS"];
const segment = fc.string({
  unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABC0123456789-._~!$&'()*+,;=:@%"),
  maxLength: 10,
});
const targetCase = fc
  .record({
    key: goodKey,
    method: fc.oneof(
      { weight: 8, arbitrary: fc.constant("POST") },
      {
        weight: 6,
        arbitrary: fc.constantFrom(
          "PATCH",
          "PUT",
          "DELETE",
          "GET",
          "HEAD",
          "OPTIONS",
          "PROPFIND",
          "M-SEARCH",
        ),
      },
      { weight: 1, arbitrary: fc.constantFrom(...METHODS_NODE_REFUSES) },
    ),
    target: fc.oneof(
      { weight: 3, arbitrary: fc.constant("/orders") },
      { weight: 3, arbitrary: segment.map((query) => `/orders?${query}`) },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          "/orders/",
          "/ORDERS",
          "//orders",
          "/orders/../orders",
          "/./orders",
          "/%6Frders",
          "/orders%2F",
          "/orders;a=b",
          "/orders#fragment",
          "/orders?a=1#f",
          "*",
          "/",
          "/%",
          "/%zz",
          "/orders%00",
          "/orders/%2e%2e/orders",
        ),
      },
      {
        weight: 2,
        arbitrary: fc
          .tuple(
            fc.constantFrom("http://127.0.0.1", "http://example.com", "https://127.0.0.1:1"),
            fc.constantFrom("/orders", "/orders?x=1", "/other", "/orders#f"),
          )
          .map(([origin, rest]) => origin + rest),
      },
      {
        weight: 2,
        arbitrary: fc
          .array(segment, { minLength: 1, maxLength: 4 })
          .map((segments) => `/${segments.join("/")}`),
      },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          "/caf\xc3\xa9",
          "/a b",
          "/a\tb",
          "/a\x7f",
          "/a\x01",
          "orders",
          "/orders\x80",
        ),
      },
    ),
  })
  .map((input) => ({
    ...input,
    nodeRefuses:
      METHODS_NODE_REFUSES.includes(input.method) ||
      someCode(input.target, (c) => c <= 0x20 || c >= 0x7f) ||
      !/^[/*h]/.test(input.target),
  }));

// ---------------------------------------------------------------------------------------------------------

describe("fuzzed HTTP input on Express, Koa, Hono and Fastify", () => {
  const started = performance.now();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "idempotency-fuzz-"));
    ledger = new Ledger(join(dir, "ledger.db"));
    const started = await Promise.all(
      BINDINGS.map((binding) =>
        ServerProcess.start({
          binding,
          store: "sqlite",
          sqlitePath: join(dir, `${binding}.db`),
          ledgerPath: ledger.path,
          maxRequestBytes: MAX_REQUEST_BYTES,
          requestTimeoutMs: REQUEST_TIMEOUT_MS,
        }),
      ),
    );
    for (const server of started) servers.set(server.name as Binding, server);
  });

  afterAll(async () => {
    await Promise.all([...servers.values()].map((server) => server.stop()));
    ledger?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keys: only 400 invalid-key for what the contract refuses, pass-through without a key, one execution and its byte-exact replay for a valid one", async () => {
    await property("keys", 1, RUNS.keys, keyFields, async (fields) => {
      const values = fields.map(([, value]) => value);
      const tooLong = values.some((value) => value.length > NODE_MAX_HEADER_BYTES);
      const refused = values.some((value) => nodeRefusesInValue(value));
      const verdict = contractKey(values);
      const category = tooLong ? "keys/431" : refused ? "keys/parser-400" : `keys/${verdict.kind}`;
      const body = JSON.stringify({ order: 1, fields: fields.length });
      await onEveryBinding(async (binding) => {
        countCase(category);
        const tenant = newTenant(binding);
        const request: RawRequest = {
          method: "POST",
          target: "/orders",
          headers: [...fields, ["Content-Type", JSON_TYPE]],
          body: Buffer.from(body),
          framing: { kind: "length" },
        };
        const context = `${binding} ${JSON.stringify(fields).slice(0, 200)}`;
        const first = only(await send(binding, tenant, request), context);
        if (tooLong) {
          // Whichever Node's parser meets first: a refused byte (400) or the end of its header budget (431).
          expectParserRefusal(first, refused ? [400, 431] : [431], context);
          expect(executionsOf(tenant), context).toBe(0);
          return;
        }
        if (refused) {
          expectParserRefusal(first, [400], context);
          expect(executionsOf(tenant), context).toBe(0);
          return;
        }
        if (verdict.kind === "missing") {
          expectOriginal(first, tenant, context);
          expect(executionsOf(tenant), context).toBe(1);
          return;
        }
        if (verdict.kind === "invalid") {
          expectProblem(first, 400, PROBLEM.invalidKey, context);
          expect(problemOf(first)?.detail.startsWith("Invalid Idempotency-Key header: "), context).toBe(true);
          expect(executionsOf(tenant), context).toBe(0);
          return;
        }
        expectOriginal(first, tenant, context);
        stored.push({
          binding,
          request: { ...request, headers: [...request.headers, ["X-Tenant", tenant]] },
          original: first,
        });
        const again = only(await send(binding, tenant, request), context);
        expectReplay(again, first, `${context} retried`);
        const respelled: RawRequest = {
          ...request,
          headers: [
            ["Idempotency-Key", otherSpelling(verdict.key, values[0] as string)],
            ["Content-Type", JSON_TYPE],
          ],
        };
        expectReplay(only(await send(binding, tenant, respelled), context), first, `${context} respelled`);
        const changed: RawRequest = { ...request, body: Buffer.from(JSON.stringify({ order: 2 })) };
        expectProblem(
          only(await send(binding, tenant, changed), context),
          422,
          PROBLEM.keyReused,
          `${context} changed`,
        );
        expect(executionsOf(tenant), context).toBe(1);
      });
    });
  });

  it("bodies: 413 past maxRequestBytes, the parser's 4xx for what it refuses, never a run for a refused body; a stored answer replays byte for byte, re-spaced JSON too, and another body is 422", async () => {
    await property("bodies", 2, RUNS.bodies, bodyCase, async (input) => {
      await onEveryBinding(async (binding) => {
        countCase(`bodies/${input.kind}`);
        const tenant = newTenant(binding);
        const request = jsonRequest(input.key, input.body, { kind: "length" }, input.type ?? null);
        const context = `${binding} ${input.kind} ${input.type} ${input.body.length} bytes`;
        const first = only(await send(binding, tenant, request), context);
        if (input.body.length > MAX_REQUEST_BYTES) {
          expectProblem(first, 413, PROBLEM.tooLarge, context);
          expect(executionsOf(tenant), context).toBe(0);
          return;
        }
        expect(
          frameworkAnswers(input.type, input.body),
          `${context}: ${JSON.stringify(summary(first))}`,
        ).toContain(first.status);
        if (first.status === 201) expectOriginal(first, tenant, context);
        expect(executionsOf(tenant), context).toBe(first.status === 201 ? 1 : 0);
        await expectRetry(binding, tenant, request, first, context);
        if (first.status !== 201) return;
        if (input.equivalent !== undefined) {
          const respaced = { ...request, body: Buffer.from(input.equivalent, "utf8") };
          expectReplay(only(await send(binding, tenant, respaced), context), first, `${context} re-spaced`);
        }
        // Fastify's parser answers before the middleware: a changed body it refuses never reaches the key.
        if (!claimsBeforeParsing(binding) && frameworkAnswers(input.type, input.changed).join() !== "201")
          return;
        const changed = { ...request, body: input.changed };
        expectProblem(
          only(await send(binding, tenant, changed), context),
          422,
          PROBLEM.keyReused,
          `${context} changed`,
        );
        expect(executionsOf(tenant), context).toBe(1);
      });
    });
  });

  it("framing: chunked with extensions and trailers is the same request as its Content-Length twin; oversized chunked is 413; a wrong Content-Length, extra bytes and malformed framing get the parser's 400 and never a second run", async () => {
    await property("framing", 3, RUNS.framing, framingCase, async (input) => {
      await onEveryBinding(async (binding) => {
        countCase(`framing/${input.kind}`);
        const tenant = newTenant(binding);
        const body = Buffer.from(JSON.stringify(input.value));
        const context = `${binding} ${input.kind}`;
        switch (input.kind) {
          case "chunked": {
            const chunked = jsonRequest(input.key, body, {
              kind: "chunked",
              sizes: input.sizes,
              extensions: input.extensions,
              trailers: input.trailers,
            });
            const first = only(await send(binding, tenant, chunked), context);
            expectOriginal(first, tenant, context);
            const twin = jsonRequest(input.key, body);
            stored.push({
              binding,
              request: { ...twin, headers: [...twin.headers, ["X-Tenant", tenant]] },
              original: first,
            });
            // The same bytes with a Content-Length: the same request, whatever the trailers said.
            expectReplay(
              only(await send(binding, tenant, twin), context),
              first,
              `${context} as Content-Length`,
            );
            expectReplay(only(await send(binding, tenant, chunked), context), first, `${context} again`);
            expect(executionsOf(tenant), context).toBe(1);
            return;
          }
          case "chunked-oversized": {
            const big = Buffer.from(JSON.stringify({ pad: "x".repeat(MAX_REQUEST_BYTES + input.extra) }));
            const request = jsonRequest(input.key, big, {
              kind: "chunked",
              sizes: [input.sizes[0] ?? 1024],
              extensions: [""],
              trailers: [],
            });
            expectProblem(
              only(await send(binding, tenant, request), context),
              413,
              PROBLEM.tooLarge,
              context,
            );
            expect(executionsOf(tenant), context).toBe(0);
            return;
          }
          case "pipelined": {
            const second = newTenant(binding);
            const next: RawRequest = {
              ...jsonRequest(`${input.key}-2`, body),
              headers: [
                ["Idempotency-Key", `${input.key}-2`],
                ["Content-Type", JSON_TYPE],
                ["X-Tenant", second],
              ],
            };
            const request = { ...jsonRequest(input.key, body), after: encodeRequest(next) };
            const result = await send(binding, tenant, request, { responses: 2 });
            expect(result.responses.length, context).toBe(2);
            expectOriginal(result.responses[0] as RawResponse, tenant, context);
            expectOriginal(result.responses[1] as RawResponse, second, `${context} (the second request)`);
            expect([executionsOf(tenant), executionsOf(second)], context).toEqual([1, 1]);
            return;
          }
          case "garbage-after": {
            // Node reads the garbage as the next request and refuses it (400, connection closed), possibly
            // before the first answer was written: the first request then ran or did not, but at most once.
            const request = { ...jsonRequest(input.key, body), after: Buffer.from(input.garbage, "latin1") };
            const result = await send(binding, tenant, request, { responses: 2 });
            const last = result.responses.at(-1) as RawResponse;
            expect(result.responses.length, context).toBeGreaterThanOrEqual(1);
            expectParserRefusal(last, [400], context);
            if (result.responses.length === 2)
              expectOriginal(result.responses[0] as RawResponse, tenant, context);
            await expectSettled(binding, tenant, jsonRequest(input.key, body), context);
            return;
          }
          case "short-length": {
            // The body is longer than its Content-Length: the first `declared` bytes are the body (a JSON prefix,
            // which no parser accepts), the rest is refused as the next request.
            const declared = Math.max(1, body.length - input.extra);
            const request = jsonRequest(input.key, body, { kind: "length", declared: [String(declared)] });
            const result = await send(binding, tenant, request, { responses: 2 });
            expect(result.responses.length, context).toBeGreaterThanOrEqual(1);
            for (const response of result.responses) expect(response.status, context).toBe(400);
            expectParserRefusal(result.responses.at(-1) as RawResponse, [400], context);
            // Node closes the connection (the leftover bytes are no request), so the claim, if any, is given
            // back before the handler starts: a body parser would take the closed request as already read.
            expect(executionsOf(tenant), context).toBe(0);
            return;
          }
          case "malformed": {
            const request: RawRequest = {
              ...jsonRequest(input.key, body),
              headers: [["Idempotency-Key", input.key], ["Content-Type", JSON_TYPE], ...input.fields],
              framing: input.framing,
            };
            expectParserRefusal(
              only(await send(binding, tenant, request), context),
              [400],
              `${context} ${JSON.stringify(input.fields)}`,
            );
            expect(executionsOf(tenant), context).toBe(0);
            // Nothing was claimed: the well-formed request with that key runs now, once.
            expectOriginal(
              only(await send(binding, tenant, jsonRequest(input.key, body)), context),
              tenant,
              `${context} then well-formed`,
            );
            expect(executionsOf(tenant), context).toBe(1);
            return;
          }
        }
      });
    });
  });

  it("a body shorter than its Content-Length, or a chunked body never finished, on a connection left open: the server's request timeout closes it (408), the handler never ran, and the key is not held", async () => {
    await property("open", 4, RUNS.open, openCase, async (input) => {
      await onEveryBinding(async (binding) => {
        countCase(`open/${input.kind}`);
        const tenant = newTenant(binding);
        const body = Buffer.from(JSON.stringify(input.value));
        let context = `${binding} ${input.kind}`;
        const wire = encodeRequest({
          ...jsonRequest(
            input.key,
            body,
            input.kind === "long-length"
              ? { kind: "length", declared: [String(body.length + input.missing)] }
              : { kind: "chunked", sizes: [8], extensions: [""], trailers: [] },
          ),
          headers: [
            ["Idempotency-Key", input.key],
            ["Content-Type", JSON_TYPE],
            ["X-Tenant", tenant],
          ],
        });
        // Unfinished: a declared length never reached, or the chunked body without its last chunk.
        const unfinished = input.kind === "long-length" ? wire : wire.subarray(0, wire.length - 5);
        const server = servers.get(binding) as ServerProcess;
        const result = await exchange(server.port, unfinished, {
          deadlineMs: REQUEST_TIMEOUT_MS + DEADLINE_MS,
        });
        requests++;
        for (const response of result.responses) statuses.push(response.status);
        context += `: ${JSON.stringify(result.responses.map(summary))} after ${result.ms.toFixed(0)} ms`;
        expect(result.timedOut, `${context}: the server never closed the connection`).toBe(false);
        // Node writes its 408 and closes; Fastify answers its own 408 with a body, then closes.
        expect(result.closed || result.responses.length === 1, context).toBe(true);
        expect(result.ms, context).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 50);
        for (const response of result.responses) expectParserRefusal(response, [408], context);
        expect(executionsOf(tenant), context).toBe(0);
        expect(server.alive, `${binding} server died: ${server.stderr}`).toBe(true);
        expectQuietStderr(server);
        // No claim was left behind: the complete request runs at once, not 409.
        expectOriginal(
          only(await send(binding, tenant, jsonRequest(input.key, body)), context),
          tenant,
          `${context} then complete`,
        );
        expect(executionsOf(tenant), context).toBe(1);
      });
    });
  });

  it("methods and request targets: no 5xx; only POST /orders runs the handler, once, and its replay; an absolute-form or fragment target is the same record as its origin form", async () => {
    await property("targets", 5, RUNS.targets, targetCase, async (input) => {
      await onEveryBinding(async (binding) => {
        countCase(
          `targets/${input.nodeRefuses ? "parser-400" : input.method === "POST" ? "post" : "other-method"}`,
        );
        const tenant = newTenant(binding);
        const body = JSON.stringify({ target: input.target });
        const request: RawRequest = {
          ...jsonRequest(input.key, body),
          method: input.method,
          target: input.target,
        };
        const context = `${binding} ${input.method} ${JSON.stringify(input.target)}`;
        const head = [input.method === "HEAD"];
        const first = only(await send(binding, tenant, request, { head }), context);
        if (input.nodeRefuses) {
          expectParserRefusal(first, [400], context);
          expect(executionsOf(tenant), context).toBe(0);
          return;
        }
        if (input.method === "POST" && /^\/orders(\?[^#]*)?$/.test(input.target))
          expect(first.status, context).toBe(201);
        if (first.status !== 201) {
          expect(executionsOf(tenant), `${context}: ${JSON.stringify(summary(first))}`).toBe(0);
          return;
        }
        expect(input.method, context).toBe("POST");
        expectOriginal(first, tenant, context);
        expectReplay(only(await send(binding, tenant, request), context), first, `${context} retried`);
        const { path, query } = originForm(input.target);
        if (path === "/orders") {
          // The identity is the path without the query; the query is in the fingerprint.
          const origin = { ...request, target: query === "" ? "/orders" : `/orders?${query}` };
          expectReplay(
            only(await send(binding, tenant, origin), context),
            first,
            `${context} as ${origin.target}`,
          );
          const otherQuery = { ...request, target: `/orders?${query}&other=1` };
          expectProblem(
            only(await send(binding, tenant, otherQuery), context),
            422,
            PROBLEM.keyReused,
            `${context} other query`,
          );
        }
        expect(executionsOf(tenant), context).toBe(1);
      });
    });
  });

  it("afterwards: every record decodes and matches its one execution in the ledger, none is left in flight, and every stored response still replays byte for byte", async () => {
    let records = 0;
    const recordStatuses: number[] = [];
    const executions = ledger.all().filter((row) => row.tenant.startsWith(`fuzz-${SEED}-`));
    const byExecution = new Map(executions.map((row) => [row.execution, row]));
    for (const binding of BINDINGS) {
      const path = join(dir, `${binding}.db`);
      const db = new Database(path, { readonly: true });
      const keys = (db.prepare("SELECT key FROM idempotency_records").all() as Array<{ key: string }>).map(
        (row) => row.key,
      );
      db.close();
      const store = new SqliteStore({ path });
      const seen = new Set<string>();
      for (const key of keys) {
        const record = await store.get(key);
        records++;
        expect(record?.state, `${binding} record ${key}`).toBe("completed");
        if (record?.state !== "completed") continue;
        expect(record.fingerprint, key).toMatch(/^xxh3-128:[0-9a-f]{32}$/);
        expect(record.response, key).not.toBeNull();
        const response = decodeResponse(record.response as Uint8Array);
        recordStatuses.push(response.status);
        expect(
          response.headers.some(([name]) => name === "set-cookie" || name === "www-authenticate"),
          key,
        ).toBe(false);
        if (response.status !== 201) continue;
        const text = Buffer.from(response.body as Uint8Array).toString("utf8");
        const execution = byExecution.get(JSON.parse(text).execution);
        expect(execution?.body, `${binding} record ${key}`).toBe(text);
        expect(seen.has(text), `${binding}: two records hold one execution`).toBe(false);
        seen.add(text);
      }
      await store.close?.();
    }
    // A key never ran twice: per tenant (one case, one key), at most one execution, except pass-through cases
    // without a key, which are not protected and ran once each too.
    const perTenant = new Map<string, number>();
    for (const row of executions) perTenant.set(row.tenant, (perTenant.get(row.tenant) ?? 0) + 1);
    expect([...perTenant.entries()].filter(([, n]) => n > 1)).toEqual([]);

    for (const { binding, request, original } of stored) {
      const tenant = (request.headers.find(([name]) => name === "X-Tenant")?.[1] ?? "") as string;
      const without = { ...request, headers: request.headers.filter(([name]) => name !== "X-Tenant") };
      expectReplay(
        only(await send(binding, tenant, without), binding),
        original,
        `${binding} ${tenant} at the end`,
      );
    }
    for (const server of servers.values()) {
      expect(server.alive, server.name).toBe(true);
      expectQuietStderr(server);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    report(
      "fuzz",
      `seed ${SEED}; ${[...cases.values()].reduce((a, b) => a + b, 0)} cases on ${BINDINGS.join("/")} (${[
        ...cases.entries(),
      ]
        .sort()
        .map(([name, n]) => `${name} ${n}`)
        .join(", ")}); ` +
        `${requests} raw requests, statuses ${tally(statuses)}; ${executions.length} executions counted (at most one per key); ` +
        `${records} records decoded (statuses ${tally(recordStatuses)}), none in flight; ${stored.length} stored responses replayed again byte for byte; ` +
        `${fiveXx} 5xx, nothing on any server's stderr; ${seconds} s`,
      { requests, executions: executions.length, records, fiveXx },
    );
    expect(fiveXx).toBe(0);
  });
});

/** A retry of the same request: the stored answer byte for byte, unless a parser refused it before any claim. */
async function expectRetry(
  binding: Binding,
  tenant: string,
  request: RawRequest,
  first: RawResponse,
  context: string,
): Promise<void> {
  const again = only(await send(binding, tenant, request), context);
  if (first.status === 201 || claimsBeforeParsing(binding)) {
    expectReplay(again, first, `${context} retried`);
    stored.push({
      binding,
      request: { ...request, headers: [...request.headers, ["X-Tenant", tenant]] },
      original: first,
    });
  } else {
    expect(
      { status: again.status, replayed: field(again, "idempotent-replayed") },
      `${context} retried`,
    ).toEqual({ status: first.status, replayed: undefined });
  }
  expect(executionsOf(tenant), context).toBe(first.status === 201 ? 1 : 0);
}

/**
 * After a request whose answer was lost: the well-formed request with its key runs once in all. If the first
 * ran, the retry replays it (409 while it still completes: retried as a client would, a bounded number of
 * times, since nothing outside the server says when it is done); if not, the retry is the one run.
 */
async function expectSettled(
  binding: Binding,
  tenant: string,
  request: RawRequest,
  context: string,
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const response = only(await send(binding, tenant, request), context);
    if (response.status === 409 && attempt < 50) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      continue;
    }
    const executions = ledger.ofTenant(tenant);
    expect(executions.length, `${context} then well-formed`).toBe(1);
    expect(response.status, context).toBe(201);
    expect(field(response, "x-execution"), context).toBe(executions[0]?.execution);
    return;
  }
}

/** The path and query a target names (RFC 9112 3.2): an absolute-form target's, and never the fragment. */
function originForm(target: string): { path: string; query: string } {
  let rest = target;
  if (!rest.startsWith("/")) {
    const scheme = rest.indexOf("://");
    if (scheme === -1) return { path: rest, query: "" };
    const authorityEnd = rest.slice(scheme + 3).search(/[/?#]/);
    rest = authorityEnd === -1 ? "/" : rest.slice(scheme + 3 + authorityEnd);
    if (!rest.startsWith("/")) rest = `/${rest}`;
  }
  const hash = rest.indexOf("#");
  if (hash !== -1) rest = rest.slice(0, hash);
  const question = rest.indexOf("?");
  return question === -1
    ? { path: rest, query: "" }
    : { path: rest.slice(0, question), query: rest.slice(question + 1) };
}
