import type { ServerResponse } from "node:http";
import type { Execution, Idempotency } from "@idempotency/core";
import type { FastifyRequest } from "fastify";

/**
 * The request decorator holding the plugin's per-request state: declared once with `null`, so every request
 * keeps one shape, and set only for keyed requests on protected routes. Registered under `Symbol.for` so
 * the ESM and CommonJS builds of this package share it.
 */
export const STATE = Symbol.for("@idempotency/fastify:state");

/** Where a claimed response is being captured. */
export type Phase =
  /** The handler runs; nothing was sent yet. */
  | "handler"
  /** Fastify's `reply.send` took the response: `onSend` captures it. */
  | "send"
  /** The handler writes `reply.raw` itself (a hijacked reply): captured at the Node response. */
  | "raw";

/** One claimed request: the engine that claimed it, its execution, and how its response is captured. */
export class Claim {
  readonly engine: Idempotency;
  readonly execution: Execution;
  phase: Phase = "handler";
  /** The response's own `writeHead`, `write`, `end`, `flushHeaders` while they are watched, else null. */
  watched: Pick<ServerResponse, "writeHead" | "write" | "end" | "flushHeaders"> | null = null;
  /** A stream piped into the response while it was watched (before its first write). */
  piped: unknown = undefined;

  constructor(engine: Idempotency, execution: Execution) {
    this.engine = engine;
    this.execution = execution;
  }
}

/** What the plugin knows about one keyed request on a protected route. */
export class RequestState {
  /** The raw body bytes read in `preParsing` (at most `maxRequestBytes`), or null when not read. */
  body: Uint8Array | null = null;
  /** More than `maxRequestBytes` arrived, so the body cannot be fingerprinted (the engine answers 413). */
  bodyTooLarge = false;
  /** The request ended before its body did (the client left mid-upload): the engine answers 400. */
  bodyAborted = false;
  claim: Claim | null = null;
}

type StatefulRequest = FastifyRequest & { [STATE]: RequestState | null };

export function stateOf(request: FastifyRequest): RequestState | null {
  return (request as StatefulRequest)[STATE];
}

export function setState(request: FastifyRequest, state: RequestState): void {
  (request as StatefulRequest)[STATE] = state;
}
