#!/usr/bin/env node
// Checks that every publishable package (packages/* not marked "private") installs and imports correctly for
// its users. Run it after `pnpm build`; it works on the built dist/ and changes nothing in the repository.
//
//  1. pack     `pnpm pack` each package into a temporary directory (pnpm turns `workspace:^` into versions).
//  2. publint  on each tarball, strict: every message counts as a problem, suggestions included.
//  3. attw     (@arethetypeswrong/cli) on each tarball: every entry point must resolve to correct types under
//              node10, node16 from CommonJS, node16 from ESM and bundler. The one exception is listed in
//              NODE10_UNSUPPORTED below, with the reason.
//  4. install  all tarballs, with the peer dependencies at the versions the repository tests against, into a
//              temporary project outside the repository (pnpm, same store, --prefer-offline: no download
//              and no better-sqlite3 compile when the workspace install has run on this machine). Then:
//       esm     an .mjs file imports every entry point, checks the main exports, and runs requests end to
//               end: the engine on MemoryStore and on SqliteStore (a file and an in-memory database, which
//               proves the native peer resolves), each binding (Express, Koa and Fastify on loopback,
//               Hono in process), and the client (idempotentFetch) against the Express binding.
//       cjs     the same from a .cjs file with require().
//       tsc     a consumer .ts (ESM) and .cts (CommonJS) file importing every entry point and using the
//               main APIs, type-checked without skipLibCheck under "nodenext" and under "bundler".
//       vitest  the conformance suite, imported from its tarball, run against MemoryStore.
//  5. The temporary directory is removed, and a summary line printed.
//
// Usage: node scripts/check-packages.mjs [--keep]   (--keep leaves the temporary directory for inspection)
// Exit code 0 when nothing is wrong, 1 otherwise.

import { execFile } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { publint } from "publint";
import { formatMessage } from "publint/utils";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const keep = process.argv.includes("--keep");

/**
 * Entry points whose types cannot resolve under TypeScript's legacy `node10` resolution (moduleResolution
 * "node"), by design: node10 ignores package.json "exports", so it cannot see any subpath that only "exports"
 * declares. `@idempotency/core/node` holds helpers for authors of bindings on Node's `http`, `@idempotency/core/web` the same for
 * Fetch API bindings, and `@idempotency/core/testing` a store for tests; Node.js 20 and bundlers always
 * read "exports", and the bindings' own type declarations never import it. These entry points are checked
 * with attw's documented `--profile node16`, which leaves out only the node10 column; every other entry
 * point is checked under the default "strict" profile.
 */
const NODE10_UNSUPPORTED = { "@idempotency/core": ["./node", "./testing", "./web"] };

/**
 * What each entry point must export, and of what kind ("class", "function", or a `typeof` answer). A new
 * publishable entry point fails the check until it is listed here.
 *
 * `requireError`: @idempotency/conformance declares vitest tests, and vitest cannot be loaded with
 * require() (its CommonJS entry throws this error on purpose). The package's CommonJS build therefore
 * resolves and then fails with vitest's own message, which is what the check expects.
 */
const EXPECTED_EXPORTS = {
  "@idempotency/core": {
    createIdempotency: "function",
    MemoryStore: "class",
    IdempotencyError: "class",
    IdempotencyStoreError: "class",
    parseIdempotencyKey: "function",
    PROBLEM_TYPES: "object",
  },
  "@idempotency/core/node": {
    nodeHeaders: "function",
    readNodeBody: "function",
    splitRequestTarget: "function",
    captureNodeResponse: "function",
  },
  "@idempotency/core/testing": { instrumentedStore: "function" },
  "@idempotency/core/web": { captureWebResponse: "function" },
  "@idempotency/conformance": {
    describeStore: "function",
    requireError: "Vitest cannot be imported in a CommonJS module using require\\(\\)",
  },
  "@idempotency/sqlite": { SqliteStore: "class", SCHEMA_VERSION: "number" },
  "@idempotency/redis": { RedisStore: "class" },
  "@idempotency/postgres": {
    PostgresStore: "class",
    createTableSql: "function",
    isValidTableName: "function",
  },
  "@idempotency/mongodb": {
    MongoStore: "class",
    MongoResponseTooLargeError: "class",
    MAX_RESPONSE_BYTES: "number",
  },
  "@idempotency/client": {
    idempotentFetch: "function",
    createIdempotentFetch: "function",
    parseProblem: "function",
    PROBLEM_TYPES: "object",
    DEFAULT_RETRY_ON: "object",
    IdempotentFetchError: "class",
    IdempotentFetchOptionsError: "class",
    IdempotentFetchBodyError: "class",
    IdempotentFetchGaveUpError: "class",
    IdempotencyInProgressError: "class",
    IdempotencyKeyReusedError: "class",
    IdempotencyKeyLockedError: "class",
  },
  "@idempotency/express": { idempotency: "function", notStarted: "function" },
  "@idempotency/hono": { idempotency: "function", notStarted: "function" },
  "@idempotency/koa": { idempotency: "function", notStarted: "function" },
  "@idempotency/fastify": { idempotency: "function", notStarted: "function", default: "function" },
};

/** Dependencies with install scripts the temporary project may run (pnpm runs none unless listed). */
const ALLOWED_BUILDS = ["better-sqlite3", "esbuild"];

// ---------------------------------------------------------------------------------------------------------
// Output and child processes

let problems = 0;

function report(step, subject, failure, detail) {
  if (failure === undefined) {
    console.log(`ok    ${step.padEnd(8)} ${subject}${detail ? ` (${detail})` : ""}`);
    return;
  }
  problems++;
  console.log(`FAIL  ${step.padEnd(8)} ${subject}`);
  console.log(indent(failure));
}

function indent(text) {
  return String(text)
    .trimEnd()
    .split("\n")
    .map((line) => `        ${line}`)
    .join("\n");
}

/** Runs a command without a shell; resolves with its exit code and output, never rejects. */
function run(command, args, options = {}) {
  return new Promise((resolvePromise) => {
    execFile(
      command,
      args,
      {
        cwd: options.cwd ?? root,
        env: options.env ?? process.env,
        timeout: options.timeoutMs ?? 120_000,
        maxBuffer: 64 << 20,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        const output = `${stdout}${stderr}${error && typeof error.code !== "number" ? `\n${error.message}` : ""}`;
        resolvePromise({ code, stdout, output });
      },
    );
  });
}

/** Runs `task` over `items`, at most `limit` at a time, keeping the order of the results. */
async function mapLimit(items, limit, task) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

const bin = (name) => join(root, "node_modules", ".bin", name);

// ---------------------------------------------------------------------------------------------------------
// 1. The publishable packages

function publishablePackages() {
  const found = [];
  const skipped = [];
  for (const entry of readdirSync(join(root, "packages"), { withFileTypes: true })) {
    const manifestPath = join(root, "packages", entry.name, "package.json");
    if (!entry.isDirectory() || !existsSync(manifestPath)) continue;
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
    if (manifest.private === true) skipped.push(manifest.name);
    else found.push({ name: manifest.name, dir: dirname(manifestPath), manifest });
  }
  found.sort((a, b) => a.name.localeCompare(b.name));
  return { packages: found, skipped };
}

/** The import specifiers of a package's "exports" ("." and subpaths), without "./package.json". */
function entryPoints(pkg) {
  return Object.keys(pkg.manifest.exports ?? { ".": null })
    .filter((subpath) => subpath !== "./package.json")
    .map((subpath) => (subpath === "." ? pkg.name : `${pkg.name}${subpath.slice(1)}`));
}

async function pack(pkg, destination) {
  if (!existsSync(join(pkg.dir, "dist"))) {
    report("pack", pkg.name, `${relative(root, pkg.dir)}/dist is missing: run \`pnpm build\` first.`);
    return undefined;
  }
  const result = await run("pnpm", ["pack", "--json", "--pack-destination", destination], { cwd: pkg.dir });
  if (result.code !== 0) {
    report("pack", pkg.name, result.output);
    return undefined;
  }
  const packed = JSON.parse(result.stdout);
  const tarball = packed.filename;
  const { stdout: manifestText } = await run("tar", ["-xzOf", tarball, "package/package.json"]);
  const packedManifest = JSON.parse(manifestText);
  const leftover = Object.entries({ ...packedManifest.dependencies, ...packedManifest.peerDependencies })
    .filter(([, range]) => range.startsWith("workspace:"))
    .map(([name, range]) => `${name}: ${range}`);
  if (leftover.length > 0) {
    report("pack", pkg.name, `the packed package.json still has workspace ranges: ${leftover.join(", ")}`);
    return undefined;
  }
  report("pack", pkg.name, undefined, `${basename(tarball)}, ${packed.files.length} files`);
  return tarball;
}

// ---------------------------------------------------------------------------------------------------------
// 2. publint and 3. attw

async function checkPublint(pkg, tarball) {
  const data = readFileSync(tarball);
  const { messages, pkg: manifest } = await publint({
    pack: { tarball: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) },
    level: "suggestion",
    strict: true,
  });
  const lines = messages.map(
    (message) => `${message.type}: ${formatMessage(message, manifest, { color: false })}`,
  );
  report("publint", pkg.name, lines.length > 0 ? lines.join("\n") : undefined);
}

/** Runs attw on one tarball; resolves with the report to print, so that parallel runs print in order. */
async function checkAttw(pkg, tarball) {
  const reduced = NODE10_UNSUPPORTED[pkg.name] ?? [];
  // One run for the other entry points under the strict profile, one for the reduced ones (if any).
  const runs =
    reduced.length === 0
      ? [[]]
      : [
          ["--exclude-entrypoints", ...reduced],
          ["--entrypoints", ...reduced, "--profile", "node16"],
        ];
  const failures = [];
  for (const args of runs) {
    const result = await run(bin("attw"), [tarball, "--format", "ascii", "--no-color", ...args]);
    const command = ["attw", basename(tarball), ...args].join(" ");
    if (result.code !== 0) failures.push(`${command}\n${result.output}`);
  }
  const failure = failures.length > 0 ? failures.join("\n") : undefined;
  const detail = reduced.length > 0 ? `${reduced.join(", ")} without node10, by design` : undefined;
  return () => report("attw", pkg.name, failure, detail);
}

// ---------------------------------------------------------------------------------------------------------
// 4. The import test

/**
 * The dependencies of the temporary project: every tarball, then each package's peer dependencies at the
 * version the package's own devDependencies pin (what the repository tests against), with their `@types`
 * packages when the repository uses them, plus the root's TypeScript and Node types.
 */
function consumerDependencies(packages, tarballs) {
  const rootManifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const dependencies = {};
  for (const pkg of packages) dependencies[pkg.name] = `file:${tarballs.get(pkg.name)}`;
  const missing = [];
  for (const pkg of packages) {
    const devDependencies = pkg.manifest.devDependencies ?? {};
    for (const peer of Object.keys(pkg.manifest.peerDependencies ?? {})) {
      if (devDependencies[peer] === undefined) missing.push(`${pkg.name}: peer ${peer}`);
      else dependencies[peer] = devDependencies[peer];
      const types = `@types/${peer.replace(/^@(.*)\//, "$1__")}`;
      if (devDependencies[types] !== undefined) dependencies[types] = devDependencies[types];
    }
  }
  for (const name of ["typescript", "@types/node"]) dependencies[name] = rootManifest.devDependencies[name];
  return { dependencies, missing };
}

async function install(workDir, packages, tarballs) {
  const { dependencies, missing } = consumerDependencies(packages, tarballs);
  if (missing.length > 0) {
    report("install", "peer versions", `no devDependency pins the version of: ${missing.join(", ")}`);
    return false;
  }
  writeFileSync(
    join(workDir, "package.json"),
    `${JSON.stringify({ name: "idempotency-consumer", private: true, type: "module", dependencies }, null, 2)}\n`,
  );
  // The tarballs depend on each other by version (e.g. "@idempotency/core": "^0.0.0"): point those at the
  // tarballs too, so that nothing is looked up in the registry.
  const overrides = packages.map((pkg) => `  "${pkg.name}": "file:${tarballs.get(pkg.name)}"`);
  const allowBuilds = ALLOWED_BUILDS.map((name) => `  ${name}: true`);
  writeFileSync(
    join(workDir, "pnpm-workspace.yaml"),
    `allowBuilds:\n${allowBuilds.join("\n")}\noverrides:\n${overrides.join("\n")}\n`,
  );
  const env = { ...process.env };
  // As scripts/install.sh does: if better-sqlite3 must compile here, node-gyp uses the installed headers.
  if (env.npm_config_nodedir === undefined && existsSync("/usr/include/node/node.h")) {
    env.npm_config_nodedir = "/usr";
  }
  const started = Date.now();
  // --no-frozen-lockfile: the project has no lockfile, and pnpm freezes it by default when CI is set.
  // Compiling better-sqlite3, when the store holds no build of it for this Node.js, takes about a minute.
  const result = await run("pnpm", ["install", "--prefer-offline", "--no-frozen-lockfile"], {
    cwd: workDir,
    env,
    timeoutMs: 600_000,
  });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  report(
    "install",
    `${packages.length} tarballs and their peers`,
    result.code === 0 ? undefined : result.output,
    `${Object.keys(dependencies).length} dependencies, ${seconds} s`,
  );
  return result.code === 0;
}

/**
 * The body of the runtime check, shared by the .mjs and the .cjs file: `load` is `import()` in one and
 * `require()` in the other. It prints the export names of every entry point as its last line of output.
 */
function runtimeCheckSource(entries) {
  const expected = Object.fromEntries(entries.map((id) => [id, EXPECTED_EXPORTS[id]]));
  return `
const EXPECTED = ${JSON.stringify(expected)};
const plain = (module) => (module && module.default !== undefined ? module.default : module);
const kindOf = (value) =>
  typeof value === "function" && /^class\\b/.test(Function.prototype.toString.call(value)) ? "class" : typeof value;
const bytes = (text) => new TextEncoder().encode(text);
const text = (data) => new TextDecoder().decode(data);

async function main(load, system) {
  const assert = plain(await load("node:assert/strict"));
  const http = plain(await load("node:http"));
  const path = plain(await load("node:path"));
  const fs = plain(await load("node:fs"));

  const modules = {};
  const names = {};
  for (const [id, expected] of Object.entries(EXPECTED)) {
    const { requireError, ...shape } = expected;
    if (system === "cjs" && requireError !== undefined) {
      await assert.rejects(load(id), new RegExp(requireError), id + " from require()");
      names[id] = null;
      continue;
    }
    const loaded = await load(id);
    modules[id] = loaded;
    names[id] = Object.keys(loaded).sort();
    for (const [name, kind] of Object.entries(shape)) {
      assert.equal(kindOf(loaded[name]), kind, id + " exports " + name + " as a " + kind);
    }
  }

  const { createIdempotency, MemoryStore, PROBLEM_TYPES } = modules["@idempotency/core"];
  const { SqliteStore } = modules["@idempotency/sqlite"];
  const Database = plain(await load("better-sqlite3"));

  // MongoStore over a driver Collection of a client that never connects: proves the peer resolves and the
  // store accepts a real Collection, without a MongoDB server.
  const { MongoStore } = modules["@idempotency/mongodb"];
  const { MongoClient } = plain(await load("mongodb"));
  const mongoClient = new MongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100");
  assert.ok(new MongoStore({ collection: mongoClient.db("app").collection("idempotency_records") }), "MongoStore");
  await mongoClient.close();

  // The engine itself: a first request runs, its retry is replayed, another body under the key gets 422.
  async function checkEngine(label, store) {
    const engine = createIdempotency({ store, scope: "global" });
    const request = (body) => ({
      method: "POST",
      path: "/orders",
      query: "",
      headers: { get: (name) => (name.toLowerCase() === "idempotency-key" ? "order-1" : null) },
      body: async () => bytes(body),
      native: null,
    });
    const first = await engine.handle(request('{"item":"apple"}'));
    assert.equal(first.action, "execute", label + ": first request");
    first.execution.start(201, { "content-type": "application/json" });
    const sent = [...first.execution.write(bytes('{"id":1}')), ...(await first.execution.end())];
    assert.equal(text(new Uint8Array(sent)), '{"id":1}', label + ": bytes sent");
    const retry = await engine.handle(request('{"item":"apple"}'));
    assert.equal(retry.action, "respond", label + ": retry");
    assert.equal(retry.replayed, true, label + ": retry replayed");
    assert.equal(retry.response.status, 201, label + ": replayed status");
    assert.equal(text(retry.response.body), '{"id":1}', label + ": replayed body");
    const reused = await engine.handle(request('{"item":"pear"}'));
    assert.equal(reused.action, "respond", label + ": key reused");
    assert.equal(reused.response.status, 422, label + ": key reused status");
    await store.close();
  }
  await checkEngine("MemoryStore", new MemoryStore());
  const file = path.join(process.cwd(), system + ".db");
  fs.rmSync(file, { force: true });
  await checkEngine("SqliteStore file", new SqliteStore({ path: file }));
  await checkEngine("SqliteStore database", new SqliteStore({ database: new Database(":memory:") }));

  // Each binding: the handler runs once; the retry gets the same 201 and body, replayed; another body gets 422.
  async function checkBinding(label, send, runs) {
    const post = (body) =>
      send("/orders", {
        method: "POST",
        headers: { "idempotency-key": "order-1", "content-type": "application/json" },
        body,
      });
    const first = await post('{"item":"apple"}');
    assert.equal(first.status, 201, label + ": first status");
    assert.equal(await first.text(), '{"id":1}', label + ": first body");
    assert.equal(first.headers.get("idempotent-replayed"), null, label + ": first is not a replay");
    const retry = await post('{"item":"apple"}');
    assert.equal(retry.status, 201, label + ": retry status");
    assert.equal(await retry.text(), '{"id":1}', label + ": retry body");
    assert.equal(retry.headers.get("idempotent-replayed"), "true", label + ": retry is a replay");
    const reused = await post('{"item":"pear"}');
    assert.equal(reused.status, 422, label + ": key reused status");
    assert.equal(reused.headers.get("content-type"), "application/problem+json", label + ": problem type");
    assert.equal((await reused.json()).type, PROBLEM_TYPES.keyReused, label + ": problem");
    assert.equal(runs(), 1, label + ": handler runs");
  }
  async function overLoopback(handler) {
    const server = http.createServer(handler);
    await new Promise((done) => server.listen(0, "127.0.0.1", done));
    const { port } = server.address();
    return {
      url: "http://127.0.0.1:" + port,
      send: (target, init) => fetch("http://127.0.0.1:" + port + target, init),
      close: () => {
        server.closeAllConnections();
        return new Promise((done) => server.close(done));
      },
    };
  }
  const options = () => ({ store: new MemoryStore(), scope: "global" });

  const express = plain(await load("express"));
  const expressApp = express();
  let expressRuns = 0;
  expressApp.post("/orders", modules["@idempotency/express"].idempotency(options()), (req, res) => {
    res.status(201).json({ id: ++expressRuns });
  });
  const expressServer = await overLoopback(expressApp);
  await checkBinding("express", expressServer.send, () => expressRuns);

  // The client against the Express binding: one key per operation, the replay flagged, key reuse typed.
  const { idempotentFetch, IdempotencyKeyReusedError, PROBLEM_TYPES: CLIENT_PROBLEM_TYPES } =
    modules["@idempotency/client"];
  assert.deepEqual(CLIENT_PROBLEM_TYPES, PROBLEM_TYPES, "client: the problem types are the core's");
  const order = (item) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ item }) });
  const created = await idempotentFetch(expressServer.url + "/orders", order("book"), { key: "client-1" });
  assert.equal(created.status, 201, "client: first status");
  assert.equal(created.replayed, false, "client: first is not a replay");
  const again = await idempotentFetch(expressServer.url + "/orders", order("book"), { key: "client-1" });
  assert.equal(again.replayed, true, "client: the same key again is a replay");
  assert.equal(await again.text(), await created.text(), "client: replayed body");
  await assert.rejects(
    idempotentFetch(expressServer.url + "/orders", order("pen"), { key: "client-1" }),
    (error) => error instanceof IdempotencyKeyReusedError && error.code === "ERR_IDEMPOTENCY_KEY_REUSED",
    "client: key reuse",
  );
  assert.equal(expressRuns, 2, "client: the handler ran once for the client's key");
  await expressServer.close();

  const Koa = plain(await load("koa"));
  const koaApp = new Koa();
  let koaRuns = 0;
  koaApp.use(modules["@idempotency/koa"].idempotency(options()));
  koaApp.use((ctx) => {
    ctx.status = 201;
    ctx.body = { id: ++koaRuns };
  });
  const koaServer = await overLoopback(koaApp.callback());
  await checkBinding("koa", koaServer.send, () => koaRuns);
  await koaServer.close();

  const { Hono } = await load("hono");
  const honoApp = new Hono();
  let honoRuns = 0;
  honoApp.post("/orders", modules["@idempotency/hono"].idempotency(options()), (c) => c.json({ id: ++honoRuns }, 201));
  await checkBinding("hono", (target, init) => honoApp.request(target, init), () => honoRuns);

  const Fastify = plain(await load("fastify"));
  const fastifyPlugin = modules["@idempotency/fastify"];
  assert.equal(fastifyPlugin.default, fastifyPlugin.idempotency, "fastify: the default export is the plugin");
  const fastifyApp = Fastify();
  let fastifyRuns = 0;
  await fastifyApp.register(fastifyPlugin.idempotency, options());
  fastifyApp.post("/orders", { config: { idempotency: true } }, async (_request, reply) => {
    reply.code(201);
    return { id: ++fastifyRuns };
  });
  await fastifyApp.listen({ port: 0, host: "127.0.0.1" });
  const fastifyPort = fastifyApp.server.address().port;
  const fastifySend = (target, init) => fetch("http://127.0.0.1:" + fastifyPort + target, init);
  await checkBinding("fastify", fastifySend, () => fastifyRuns);
  await fastifyApp.close();

  console.log(JSON.stringify(names));
}
`;
}

/**
 * A consumer's TypeScript, the same text for the .ts (ESM) and the .cts (CommonJS) file: every entry point
 * imported, the main APIs used as the READMEs show, and `@ts-expect-error` lines that fail if a type
 * degraded to `any`.
 */
function consumerTypeScript(entries) {
  const namespaces = entries.map((id, index) => `import * as entry${index} from "${id}";`);
  return `${namespaces.join("\n")}
import { createIdempotency, type Decision, type IdempotencyRequest, type IdempotencyStore, MemoryStore, PROBLEM_TYPES } from "@idempotency/core";
import { nodeHeaders } from "@idempotency/core/node";
import { createIdempotentFetch, IdempotencyKeyLockedError, IdempotencyKeyReusedError, type IdempotentResponse, type RetryEvent } from "@idempotency/client";
import { describeStore, type StoreFactory } from "@idempotency/conformance";
import { idempotency as expressIdempotency, notStarted } from "@idempotency/express";
import fastifyIdempotency, { idempotency as fastifyPlugin, notStarted as fastifyNotStarted } from "@idempotency/fastify";
import { idempotency as honoIdempotency } from "@idempotency/hono";
import { idempotency as koaIdempotency } from "@idempotency/koa";
import { MongoStore } from "@idempotency/mongodb";
import { RedisStore } from "@idempotency/redis";
import { SqliteStore } from "@idempotency/sqlite";
import Database from "better-sqlite3";
import express from "express";
import Fastify from "fastify";
import { Hono } from "hono";
import { Redis } from "ioredis";
import Koa from "koa";
import { MongoClient } from "mongodb";

export const entries: object[] = [${entries.map((_, index) => `entry${index}`).join(", ")}];

const store: IdempotencyStore = new MemoryStore();
const engine = createIdempotency({ store, scope: (request) => request.headers.get("x-tenant-id") ?? "anonymous" });
export const decide = (request: IdempotencyRequest): Promise<Decision> => engine.handle(request);
export const reused: string = PROBLEM_TYPES.keyReused;
export const tenant = (rawHeaders: string[]): string | null => nodeHeaders(rawHeaders).get("x-tenant-id");

const sqlite: IdempotencyStore = new SqliteStore({ database: new Database(":memory:"), table: "records" });
const redis: IdempotencyStore = new RedisStore({ client: new Redis({ lazyConnect: true }) });
const mongo: IdempotencyStore = new MongoStore({
  collection: new MongoClient("mongodb://127.0.0.1:27017").db("app").collection("idempotency_records"),
  writeConcern: { w: "majority" },
});
export const mongoStore = (): IdempotencyStore => mongo;
const factory: StoreFactory = () => sqlite;
export const suite = (): void => describeStore("SqliteStore", factory);

const expressApp = express();
expressApp.post("/orders", expressIdempotency({ store, scope: "global" }), (req, res) => {
  notStarted(req);
  res.status(201).json({ id: 1 });
});
const honoApp = new Hono();
honoApp.post("/orders", honoIdempotency({ store: redis, scope: "global" }), (c) => c.json({ id: 1 }, 201));
const koaApp = new Koa();
koaApp.use(koaIdempotency({ store: sqlite, scope: "global" }));
const fastifyApp = Fastify();
void fastifyApp.register(fastifyPlugin, { store, scope: "global", allRoutes: true });
void fastifyApp.register(fastifyIdempotency, { store: sqlite, scope: (request) => request.path });
fastifyApp.post("/orders", { config: { idempotency: { required: true } } }, async (_request, reply) => {
  fastifyNotStarted(reply);
  return reply.notStarted().code(403).send({ error: "forbidden" });
});

const fetchWithRetries = createIdempotentFetch({
  maxAttempts: 3,
  onRetry: (event: RetryEvent) => console.warn(event.attempt, event.delayMs, event.reason),
});
export const created = (): Promise<IdempotentResponse> =>
  fetchWithRetries("https://api.example/orders", { method: "POST", body: "{}" }, { key: "order-1" });
export const isReuse = (error: unknown): boolean =>
  error instanceof IdempotencyKeyReusedError && error.problem.type === PROBLEM_TYPES.keyReused;
export const lockedKey = (error: unknown): string | undefined =>
  error instanceof IdempotencyKeyLockedError && error.problem.type === PROBLEM_TYPES.keyLocked
    ? error.idempotencyKey
    : undefined;

// @ts-expect-error maxAttempts is a number
createIdempotentFetch({ maxAttempts: "3" });
// @ts-expect-error storeTimeoutMs is a number of milliseconds
createIdempotency({ store, scope: "global", storeTimeoutMs: "2s" });
// @ts-expect-error the store is required
expressIdempotency({ scope: "global" });
// @ts-expect-error allRoutes is true or false
void fastifyApp.register(fastifyPlugin, { store, scope: "global", allRoutes: "yes" });
// @ts-expect-error path is a file name
new SqliteStore({ path: 1 });
// @ts-expect-error client is an ioredis client, not a URL
new RedisStore({ client: "redis://127.0.0.1:6379" });
// @ts-expect-error collection is a driver Collection, not a name
new MongoStore({ collection: "idempotency_records" });
`;
}

function tsconfig(module, moduleResolution, include) {
  const compilerOptions = {
    target: "ES2022",
    lib: ["ES2022"],
    types: ["node"],
    module,
    moduleResolution,
    strict: true,
    skipLibCheck: false,
    noEmit: true,
  };
  return `${JSON.stringify({ compilerOptions, include }, null, 2)}\n`;
}

async function importTest(workDir, entries) {
  const shared = runtimeCheckSource(entries);
  writeFileSync(join(workDir, "consumer.mjs"), `${shared}\nawait main((id) => import(id), "esm");\n`);
  writeFileSync(
    join(workDir, "consumer.cjs"),
    `${shared}\nmain(async (id) => require(id), "cjs").catch((error) => {\n  console.error(error);\n  process.exitCode = 1;\n});\n`,
  );
  const runs = {};
  for (const system of ["esm", "cjs"]) {
    const result = await run(process.execPath, [`consumer.${system === "esm" ? "mjs" : "cjs"}`], {
      cwd: workDir,
    });
    const lastLine = result.stdout.trim().split("\n").at(-1) ?? "";
    if (result.code === 0) runs[system] = JSON.parse(lastLine);
    report(
      system,
      "import every entry point; engine, SqliteStore and bindings end to end",
      result.code === 0 ? undefined : result.output,
      `${entries.length} entry points`,
    );
  }
  if (runs.esm && runs.cjs) {
    const differences = entries
      .filter((id) => runs.esm[id] !== null && runs.cjs[id] !== null)
      .filter((id) => JSON.stringify(runs.esm[id]) !== JSON.stringify(runs.cjs[id]))
      .map((id) => `${id}\n  ESM: ${runs.esm[id].join(", ")}\n  CJS: ${runs.cjs[id].join(", ")}`);
    report(
      "exports",
      "the ESM and CommonJS builds export the same names",
      differences.join("\n") || undefined,
    );
  }

  const source = consumerTypeScript(entries);
  writeFileSync(join(workDir, "consumer-types.ts"), source);
  writeFileSync(join(workDir, "consumer-types.cts"), source);
  const include = ["consumer-types.ts", "consumer-types.cts"];
  writeFileSync(join(workDir, "tsconfig.nodenext.json"), tsconfig("nodenext", "nodenext", include));
  writeFileSync(join(workDir, "tsconfig.bundler.json"), tsconfig("preserve", "bundler", include));
  const tsc = join(workDir, "node_modules", ".bin", "tsc");
  const [nodenext, bundler] = await Promise.all(
    ["nodenext", "bundler"].map((name) => run(tsc, ["-p", `tsconfig.${name}.json`], { cwd: workDir })),
  );
  report(
    "tsc",
    "nodenext: consumer .ts (ESM) and .cts (CommonJS)",
    nodenext.code === 0 ? undefined : nodenext.output,
  );
  report("tsc", "bundler: consumer .ts and .cts", bundler.code === 0 ? undefined : bundler.output);

  writeFileSync(
    join(workDir, "memory.test.mjs"),
    `import { describeStore } from "@idempotency/conformance";
import { MemoryStore } from "@idempotency/core";

const clock = { t: 1_700_000_000_000 };
const store = new MemoryStore({ now: () => clock.t });
describeStore("MemoryStore", () => store, {
  advanceTime: (ms) => {
    clock.t += ms;
  },
});
`,
  );
  const vitest = join(workDir, "node_modules", ".bin", "vitest");
  const result = await run(vitest, ["run", "--reporter=json", "--outputFile=vitest.json"], { cwd: workDir });
  const summary = existsSync(join(workDir, "vitest.json"))
    ? JSON.parse(readFileSync(join(workDir, "vitest.json"), "utf8"))
    : undefined;
  const passed =
    result.code === 0 &&
    summary !== undefined &&
    summary.numTotalTests > 0 &&
    summary.numPassedTests === summary.numTotalTests;
  report(
    "vitest",
    "the conformance suite from its tarball, against MemoryStore",
    passed ? undefined : result.output,
    summary ? `${summary.numPassedTests} of ${summary.numTotalTests} tests passed` : undefined,
  );
}

// ---------------------------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  const { packages, skipped } = publishablePackages();
  console.log(
    `check-packages: ${packages.length} publishable packages${skipped.length > 0 ? ` (skipping private ${skipped.join(", ")})` : ""}`,
  );
  const workDir = mkdtempSync(join(tmpdir(), "idempotency-check-packages-"));
  process.once("SIGINT", () => {
    if (!keep) rmSync(workDir, { recursive: true, force: true });
    process.exit(130);
  });
  try {
    const tarballDir = join(workDir, "tarballs");
    const tarballs = new Map();
    for (const pkg of packages) {
      const tarball = await pack(pkg, tarballDir);
      if (tarball !== undefined) tarballs.set(pkg.name, tarball);
    }
    const packed = packages.filter((pkg) => tarballs.has(pkg.name));
    for (const pkg of packed) await checkPublint(pkg, tarballs.get(pkg.name));
    const attwReports = await mapLimit(packed, availableParallelism(), (pkg) =>
      checkAttw(pkg, tarballs.get(pkg.name)),
    );
    for (const print of attwReports) print();

    const entries = packed.flatMap(entryPoints);
    const unlisted = entries.filter((id) => EXPECTED_EXPORTS[id] === undefined);
    if (unlisted.length > 0) {
      report(
        "imports",
        "expected exports",
        `add these entry points to EXPECTED_EXPORTS: ${unlisted.join(", ")}`,
      );
    } else if (packed.length < packages.length) {
      report("imports", "import test", "skipped: every package must pack first");
    } else {
      const consumerDir = join(workDir, "consumer");
      mkdirSync(consumerDir);
      if (await install(consumerDir, packages, tarballs)) await importTest(consumerDir, entries);
    }
  } finally {
    if (keep) console.log(`kept ${workDir}`);
    else rmSync(workDir, { recursive: true, force: true });
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(
    `check-packages: ${packages.length} packages checked, ${problems} problem${problems === 1 ? "" : "s"} found (${seconds} s)`,
  );
  process.exitCode = problems > 0 ? 1 : 0;
}

await main();
