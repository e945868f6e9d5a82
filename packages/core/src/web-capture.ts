import type { Execution } from "./execution.js";
import { isBodylessStatus } from "./replay.js";

const encoder = new TextEncoder();
const WOULD_BLOCK = Symbol("would block");
type ReadResult = ReadableStreamReadResult<unknown>;

/** What could be read from a body without waiting for its producer. */
interface BodyHead {
  chunks: Uint8Array[];
  /** The body ended within `chunks`: its length is known. */
  done: boolean;
  /** A read that did not resolve in time; the next bytes come from it. */
  pending: Promise<ReadResult> | undefined;
}

/**
 * Hands a handler's Fetch API `Response` to the engine and returns the response to send in its place: the
 * same status and headers, and a body that passes every chunk through `execution.write` and ends only after
 * `execution.end()` has completed (or released) the record. The one capture for bindings on the Fetch API
 * (Hono, or your own for another framework that answers with a `Response`).
 *
 * A body that is already complete (what `c.json()`, `c.text()` and `c.body(bytes)` produce) keeps the
 * `Content-Length` framing the server would have given it and is handed on once the record is completed. A stream
 * flows through as it is produced, pulled by the client's reads, until the client goes away (the runtime
 * cancels the body, or `signal` aborts); from then on it is drained to the end independently, so the
 * handler's result is still stored and a retry replays it. A body that errors counts as no response: the
 * claim is released.
 *
 * @param response - what the handler answered
 * @param execution - the claimed execution the engine handed to the binding's `execute`
 * @param signal - the request's signal, which aborts when the client goes away, or a function that returns it:
 *   it is then asked for only when the body is a stream still being produced (on `@hono/node-server`,
 *   creating a request's signal costs an `AbortController`)
 * @param known - the response's complete body, when the binding has it without reading `response` (it knows
 *   its server's own `Response` type): the body stream is then not read. `statusText` goes with it, `""` when
 *   the server would not send one.
 *
 * @example
 * ```ts
 * import { captureWebResponse } from "@idempotency/core/web";
 *
 * // inside a binding's execute(execution):
 * const answer = await handler(request);
 * return captureWebResponse(answer, execution, request.signal);
 * ```
 */
export async function captureWebResponse(
  response: Response,
  execution: Execution,
  signal: AbortSignal | (() => AbortSignal),
  known?: KnownBody,
): Promise<Response> {
  const status = response.status;
  const statusText = known === undefined ? response.statusText : known.statusText;
  const headers = new Headers(response.headers);
  if (known !== undefined && known.body !== null) {
    return completeBody(execution, status, statusText, headers, [known.body]);
  }
  if (known !== undefined || response.body === null) {
    execution.start(status, headers);
    const rest = await execution.end();
    return (
      replaced(execution) ??
      new Response(rest.length > 0 ? (rest as Uint8Array<ArrayBuffer>) : null, {
        status,
        statusText,
        headers,
      })
    );
  }

  const reader = response.body.getReader();
  let head: BodyHead;
  try {
    head = execution.holdsResponse ? await readAll(reader) : await readAvailable(reader);
  } catch (error) {
    await execution.abandon();
    throw error;
  }
  if (head.done) return completeBody(execution, status, statusText, headers, head.chunks);
  execution.start(status, headers);
  const abort = typeof signal === "function" ? signal() : signal;
  return new Response(captureBody(reader, head, execution, abort), { status, statusText, headers });
}

/**
 * A response body already in hand, for {@link captureWebResponse}: `body` is all of it (`null`: none).
 *
 * @example
 * ```ts
 * const known: KnownBody = { body: new TextEncoder().encode('{"id":1}'), statusText: "" };
 * return captureWebResponse(answer, execution, () => request.signal, known);
 * ```
 */
export interface KnownBody {
  readonly body: Uint8Array | null;
  readonly statusText: string;
}

/** A complete body: declare its length as the server would have, and send it once the record is completed. */
async function completeBody(
  execution: Execution,
  status: number,
  statusText: string,
  headers: Headers,
  chunks: readonly Uint8Array[],
): Promise<Response> {
  if (canDeclareLength(status, headers)) headers.set("content-length", String(byteLength(chunks)));
  execution.start(status, headers);
  const parts = chunks.map((chunk) => execution.write(chunk));
  parts.push(await execution.end());
  return (
    replaced(execution) ??
    new Response(concat(parts) as Uint8Array<ArrayBuffer>, { status, statusText, headers })
  );
}

/** The execution's replacement (a 503 after a failed commit) as a `Response`, when it has one. */
function replaced(execution: Execution): Response | undefined {
  const replacement = execution.replacement;
  if (replacement === undefined) return undefined;
  return new Response(replacement.body as Uint8Array<ArrayBuffer>, {
    status: replacement.status,
    headers: replacement.headers,
  });
}

/** Reads the whole body, for an execution that sends nothing before its end. */
async function readAll(reader: ReadableStreamDefaultReader<unknown>): Promise<BodyHead> {
  const chunks: Uint8Array[] = [];
  for (;;) {
    const result = await reader.read();
    if (result.done) return { chunks, done: true, pending: undefined };
    chunks.push(toBytes(result.value));
  }
}

function byteLength(chunks: readonly Uint8Array[]): number {
  return chunks.reduce((sum, chunk) => sum + chunk.length, 0);
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(byteLength(chunks));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function canDeclareLength(status: number, headers: Headers): boolean {
  if (isBodylessStatus(status)) return false;
  return !headers.has("content-length") && !headers.has("transfer-encoding");
}

/**
 * Reads up to two chunks that are available without waiting for a timer turn: a complete body (one chunk,
 * then its end) is recognised by its end arriving here; a stream is left to flow.
 */
async function readAvailable(reader: ReadableStreamDefaultReader<unknown>): Promise<BodyHead> {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < 2; i++) {
    const read = reader.read();
    const result = await raceTimerTurn(read);
    if (result === WOULD_BLOCK) return { chunks, done: false, pending: read };
    if (result.done) return { chunks, done: true, pending: undefined };
    chunks.push(toBytes(result.value));
  }
  return { chunks, done: false, pending: undefined };
}

async function raceTimerTurn(read: Promise<ReadResult>): Promise<ReadResult | typeof WOULD_BLOCK> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const turn = new Promise<typeof WOULD_BLOCK>((resolve) => {
    timer = setTimeout(() => resolve(WOULD_BLOCK), 0);
  });
  try {
    return await Promise.race([read, turn]);
  } finally {
    clearTimeout(timer);
  }
}

function captureBody(
  reader: ReadableStreamDefaultReader<unknown>,
  head: BodyHead,
  execution: Execution,
  signal: AbortSignal,
): ReadableStream<Uint8Array> {
  const queued = [...head.chunks];
  let pending = head.pending;
  let sourceDone = head.done;
  let clientGone = false;
  let settled = false;
  // The step in progress, so that draining after a cancel continues after it rather than beside it.
  let step: Promise<void> = Promise.resolve();

  async function readSource(): Promise<Uint8Array | null> {
    const chunk = queued.shift();
    if (chunk !== undefined) return chunk;
    if (sourceDone) return null;
    const result = await (pending ?? reader.read());
    pending = undefined;
    if (result.done) {
      sourceDone = true;
      return null;
    }
    return toBytes(result.value);
  }

  /** The next bytes that may be sent, or `null` once the body has ended. */
  async function next(): Promise<Uint8Array | null> {
    for (;;) {
      const chunk = await readSource();
      if (chunk === null) return null;
      const forward = execution.write(chunk);
      if (forward.length > 0) return forward;
    }
  }

  async function finish(): Promise<Uint8Array> {
    if (settled) return new Uint8Array(0);
    settled = true;
    signal.removeEventListener("abort", leave);
    return execution.end();
  }

  async function fail(error: unknown): Promise<void> {
    if (settled) return;
    settled = true;
    signal.removeEventListener("abort", leave);
    await execution.abandon();
    await reader.cancel(error).catch(() => {});
  }

  async function drain(): Promise<void> {
    if (settled) return;
    try {
      while ((await next()) !== null) {}
      await finish();
    } catch (error) {
      await fail(error);
    }
  }

  /** The client is gone: nobody reads this body any more, but the handler's result is still stored. */
  function leave(): void {
    if (clientGone) return;
    clientGone = true;
    void step.then(drain);
  }

  if (signal.aborted) leave();
  else signal.addEventListener("abort", leave, { once: true });

  return new ReadableStream<Uint8Array>({
    pull(controller) {
      // After the client left, a reader still waiting gets the end (a cancelled stream ignores it).
      const end = () => {
        try {
          controller.close();
        } catch {}
      };
      if (clientGone) return end();
      step = (async () => {
        try {
          const chunk = await next();
          if (clientGone) return end();
          if (chunk !== null) return controller.enqueue(chunk);
          const rest = await finish();
          if (clientGone) return end();
          if (rest.length > 0) controller.enqueue(rest);
          controller.close();
        } catch (error) {
          await fail(error);
          if (!clientGone) controller.error(error);
        }
      })();
      return step;
    },
    cancel() {
      leave();
    },
  });
}

/** Response body chunks are bytes; strings and other buffers (which some runtimes accept) are converted. */
function toBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (typeof chunk === "string") return encoder.encode(chunk);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError(
    `A response body chunk must be a Uint8Array, an ArrayBuffer or a string; got ${typeof chunk}.`,
  );
}
