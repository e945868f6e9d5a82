import type { Execution } from "@idempotency/core";

const encoder = new TextEncoder();

/**
 * Hands a handler's response to the engine and returns the response to send in its place: the same status
 * and headers, and a body that passes every chunk through `execution.write` and ends only after
 * `execution.end()` has completed (or released) the record.
 *
 * The handler's body is pulled by the client's reads (so backpressure holds) until the client goes away;
 * from then on it is drained to the end independently, so the handler's result is still stored and a retry
 * replays it. A body stream that errors counts as no response: the claim is released.
 */
export async function captureResponse(
  response: Response,
  execution: Execution,
  onFinished: () => void,
): Promise<Response> {
  execution.start(response.status, response.headers);
  const init = { status: response.status, statusText: response.statusText, headers: response.headers };
  if (response.body === null) {
    const rest = await execution.end();
    onFinished();
    return new Response(rest.length > 0 ? (rest as Uint8Array<ArrayBuffer>) : null, init);
  }
  return new Response(captureBody(response.body, execution, onFinished), init);
}

function captureBody(
  source: ReadableStream<unknown>,
  execution: Execution,
  onFinished: () => void,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let clientGone = false;
  // The read in progress, so that draining after a cancel continues after it rather than beside it.
  let pending: Promise<void> = Promise.resolve();
  let settled = false;

  async function finish(): Promise<Uint8Array> {
    if (settled) return new Uint8Array(0);
    settled = true;
    const rest = await execution.end();
    onFinished();
    return rest;
  }

  async function fail(error: unknown): Promise<void> {
    if (settled) return;
    settled = true;
    await execution.abandon();
    onFinished();
    await reader.cancel(error).catch(() => {});
  }

  /** Reads until it has bytes to forward or the body ended; `null` means the body is complete. */
  async function next(): Promise<Uint8Array | null> {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return null;
      const forward = execution.write(toBytes(value));
      if (forward.length > 0) return forward;
    }
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

  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const step = (async () => {
        try {
          const chunk = await next();
          if (clientGone) return;
          if (chunk !== null) {
            controller.enqueue(chunk);
            return;
          }
          const rest = await finish();
          if (clientGone) return;
          if (rest.length > 0) controller.enqueue(rest);
          controller.close();
        } catch (error) {
          await fail(error);
          if (!clientGone) controller.error(error);
        }
      })();
      pending = step;
      return step;
    },
    cancel() {
      clientGone = true;
      execution.closed();
      // The response is still the handler's result: read it to the end and store it.
      return void pending.then(drain);
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
