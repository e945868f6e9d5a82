import type { Readable } from "node:stream";
import type { Idempotency } from "@idempotency/core";
import type { FastifyReply, FastifyRequest } from "fastify";
import { bufferBody } from "./body.js";
import { capturePayload, isSendable } from "./capture.js";
import { stopWatching, watchDirectWrites } from "./raw.js";
import { neutralRequest } from "./request.js";
import { sendProblem, sendReplay } from "./respond.js";
import { Claim, RequestState, setState, stateOf } from "./state.js";

type Done = (error?: Error | null) => void;
type PayloadDone = (error?: Error | null, payload?: unknown) => void;

/**
 * The three route hooks that protect a route with one engine, appended to the route's own hooks so that
 * they run after every other hook of their kind (one set per engine, shared by all its routes):
 *
 * - `preParsing` reads the raw body of a keyed request for the fingerprint and hands Fastify the same bytes;
 * - `preHandler`, right before the handler (after authentication and schema validation), asks the engine:
 *   pass on, answer with a replay (written as stored) or a problem, or run the handler under a fresh claim;
 * - `onSend`, the last one, captures what Fastify is about to send (after the error handler, if any) and
 *   completes the record before Fastify writes it.
 */
export class RouteGuard {
  readonly #engine: Idempotency;
  readonly #header: string;
  readonly #readsBody: boolean;
  /** The engine's own fingerprint reads the body, so a body over `maxRequestBytes` is its 413 whatever else. */
  readonly #refusesOversized: boolean;

  constructor(engine: Idempotency) {
    this.#engine = engine;
    this.#header = engine.options.header.toLowerCase();
    this.#readsBody = engine.options.fingerprint !== false;
    this.#refusesOversized = this.#readsBody && typeof engine.options.fingerprint !== "function";
  }

  /** Whether a route with these methods needs the hooks at all (a GET route never does by default). */
  protects(method: string | readonly string[]): boolean {
    const methods = typeof method === "string" ? [method] : method;
    return methods.some((name) => this.#engine.options.methods.has(name.toUpperCase()));
  }

  readonly preParsing = (
    request: FastifyRequest,
    reply: FastifyReply,
    payload: Readable,
    done: PayloadDone,
  ) => {
    const { methods, maxRequestBytes } = this.#engine.options;
    if (
      !methods.has(request.method) ||
      request.headers[this.#header] === undefined ||
      stateOf(request) !== null // read already, for a guard registered further out
    ) {
      done(null, payload);
      return;
    }
    const state = new RequestState();
    setState(request, state);
    if (!this.#readsBody) {
      done(null, payload);
      return;
    }
    if (this.#refusesOversized && declaredLength(request) > maxRequestBytes) {
      // The client announced more than can ever be fingerprinted: refuse before reading a byte of it, as the
      // other bindings do, instead of buffering up to maxRequestBytes of a body that may arrive slowly.
      state.bodyTooLarge = true;
      this.#refuseUnreadable(request, reply, state, () => done(null, payload), done);
      return;
    }
    bufferBody(request.raw, payload, maxRequestBytes, state).then(
      (stream) => {
        if (!state.bodyTooLarge || !this.#refusesOversized) return done(null, stream);
        this.#refuseUnreadable(request, reply, state, () => done(null, stream), done);
      },
      (error: Error) => {
        // The request ended before its body did: the engine answers 400 request-aborted (the client has
        // usually left), instead of the stream error reaching Fastify as a 500.
        state.bodyAborted = true;
        this.#refuseUnreadable(request, reply, state, () => done(error), done);
      },
    );
  };

  /**
   * Answers now, in `preParsing`, a request whose body can never be fingerprinted: larger than
   * `maxRequestBytes` (before Fastify parses it, or refuses it past its bodyLimit) or cut short by the
   * client. The engine says 413 or 400 request-aborted (or 400 for a bad key), without any store call.
   * Anything else goes on with `proceed`; a claim (a fingerprint function that did not read the body) is
   * given back first.
   */
  #refuseUnreadable(
    request: FastifyRequest,
    reply: FastifyReply,
    state: RequestState,
    proceed: () => void,
    fail: Done,
  ): void {
    this.#engine.handle(neutralRequest(request, state)).then(
      async (decision) => {
        if (decision.action === "respond") return sendProblem(reply, decision.response);
        if (decision.action === "execute") await decision.execution.abandon();
        proceed();
      },
      (error: Error) => fail(error),
    );
  }

  readonly preHandler = (request: FastifyRequest, reply: FastifyReply, done: Done) => {
    const state = stateOf(request);
    if (state?.claim) {
      done(); // claimed by a guard registered further out
      return;
    }
    this.#engine.handle(neutralRequest(request, state)).then(
      (decision) => {
        if (decision.action === "pass") return done();
        if (decision.action === "respond") {
          if (decision.replayed) sendReplay(reply, decision.response);
          else sendProblem(reply, decision.response);
          return;
        }
        const claim = new Claim(this.#engine, decision.execution);
        let claimed = state;
        if (claimed === null) {
          claimed = new RequestState();
          setState(request, claimed);
        }
        claimed.claim = claim;
        watchDirectWrites(reply.raw, claim);
        done();
      },
      (error: Error) => done(error), // the scope or fingerprint function failed: Fastify's error handling
    );
  };

  readonly onSend = (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: PayloadDone) => {
    const state = stateOf(request);
    if (state === null) {
      done(null, payload);
      return;
    }
    const claim = state.claim;
    if (
      claim === null ||
      claim.engine !== this.#engine ||
      claim.phase !== "handler" ||
      !isSendable(payload)
    ) {
      // Not this guard's claim, already captured, or a payload Fastify will refuse (its error comes next).
      done(null, payload);
      return;
    }
    claim.phase = "send";
    stopWatching(reply.raw, claim);
    capturePayload(reply, payload, claim.execution).then(
      (sent) => done(null, sent),
      (error: Error) => done(error),
    );
  };
}

/** The request's `Content-Length` as a number, or -1 when it has none (or not a plain decimal one). */
function declaredLength(request: FastifyRequest): number {
  const declared = request.headers["content-length"];
  if (declared === undefined || !/^\s*\d+\s*$/.test(declared)) return -1;
  return Number(declared);
}
