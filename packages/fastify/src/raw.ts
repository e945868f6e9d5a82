import type { ServerResponse } from "node:http";
import { captureNodeResponse } from "@idempotency/core/node";
import type { Claim } from "./state.js";

type Method = "writeHead" | "write" | "end" | "flushHeaders";
type Loose = (this: ServerResponse, ...args: unknown[]) => unknown;

const watching = new WeakMap<ServerResponse, Claim>();

/** One shared trap per method (not a closure per request): the claim is found by its response. */
function trap(method: Method) {
  return function directWrite(this: ServerResponse, ...args: unknown[]): unknown {
    const claim = watching.get(this);
    if (claim !== undefined) {
      stopWatching(this, claim);
      if (claim.phase === "handler") {
        // Written before Fastify's send took the response: a hijacked reply (or a handler bypassing
        // reply.send). Capture it where it is written, so that a retry replays it instead of running again.
        claim.phase = "raw";
        captureNodeResponse(this, claim.execution, claim.piped);
      }
    }
    return (this[method] as Loose).apply(this, args);
  };
}

/** `readable.pipe(res)` announces itself before its first write: the capture must know the stream. */
function rememberPipe(this: ServerResponse, source: unknown): void {
  const claim = watching.get(this);
  if (claim !== undefined) claim.piped = source;
}

const TRAPS = {
  writeHead: trap("writeHead"),
  write: trap("write"),
  end: trap("end"),
  flushHeaders: trap("flushHeaders"),
};

/**
 * Watches a claimed request's Node response until Fastify's own send takes it (`stopWatching`): the first
 * direct write switches the claim to capture at the Node level (`captureNodeResponse`).
 */
export function watchDirectWrites(res: ServerResponse, claim: Claim): void {
  claim.watched = {
    writeHead: res.writeHead,
    write: res.write,
    end: res.end,
    flushHeaders: res.flushHeaders,
  };
  watching.set(res, claim);
  res.on("pipe", rememberPipe);
  res.writeHead = TRAPS.writeHead as ServerResponse["writeHead"];
  res.write = TRAPS.write as ServerResponse["write"];
  res.end = TRAPS.end as ServerResponse["end"];
  res.flushHeaders = TRAPS.flushHeaders;
}

/** Puts the response's own methods back. */
export function stopWatching(res: ServerResponse, claim: Claim): void {
  const own = claim.watched;
  if (own === null) return;
  claim.watched = null;
  watching.delete(res);
  res.off("pipe", rememberPipe);
  res.writeHead = own.writeHead;
  res.write = own.write;
  res.end = own.end;
  res.flushHeaders = own.flushHeaders;
}
