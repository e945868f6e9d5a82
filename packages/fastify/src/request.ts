import {
  IdempotencyBodyConsumedError,
  type IdempotencyRequest,
  IdempotencyRequestAbortedError,
  IdempotencyRequestTooLargeError,
} from "@idempotency/core";
import { nodeHeaders, splitRequestTarget } from "@idempotency/core/node";
import type { FastifyRequest } from "fastify";
import type { RequestState } from "./state.js";

/**
 * Translates a Fastify request into the engine's neutral request. The path is the request target exactly as
 * Fastify routed it (`request.url`, after any `rewriteUrl`), without the query string, so a prefix is part of
 * it; the headers come from the raw fields, so a repeated `Idempotency-Key` is seen. The body is what the
 * route's `preParsing` hook read; `native` is the `FastifyRequest`, for scope functions.
 */
export function neutralRequest(request: FastifyRequest, state: RequestState | null): IdempotencyRequest {
  const { path, query } = splitRequestTarget(request.url);
  return {
    method: request.method.toUpperCase(),
    path,
    query,
    headers: nodeHeaders(request.raw.rawHeaders),
    body: (maxBytes?: number) => bodyOf(state, maxBytes),
    native: request,
  };
}

function bodyOf(state: RequestState | null, maxBytes: number | undefined): Promise<Uint8Array> {
  if (state?.bodyAborted) return Promise.reject(new IdempotencyRequestAbortedError());
  const body = state?.body ?? null;
  if (state?.bodyTooLarge || (body !== null && maxBytes !== undefined && body.length > maxBytes)) {
    return Promise.reject(new IdempotencyRequestTooLargeError(maxBytes ?? body?.length ?? 0));
  }
  if (body === null) {
    // Not reached through the plugin: the route's preParsing hook reads the body of every keyed request
    // whose fingerprint may need it.
    return Promise.reject(
      new IdempotencyBodyConsumedError(
        "Register @idempotency/fastify before the route, so its preParsing hook reads the body.",
      ),
    );
  }
  return Promise.resolve(body);
}
