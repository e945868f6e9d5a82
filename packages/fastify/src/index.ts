import { type IdempotencyRouteConfig, idempotency } from "./plugin.js";

export type {
  IdempotencyEvent,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyStore,
} from "@idempotency/core";
export {
  type FastifyIdempotencyOptions,
  type IdempotencyRouteConfig,
  idempotency,
  idempotencySignal,
  idempotencyTransaction,
  notStarted,
} from "./plugin.js";
export default idempotency;

declare module "fastify" {
  interface FastifyContextConfig {
    /** Protects this route (`true`, or an object of option overrides) or leaves it out (`false`). */
    idempotency?: IdempotencyRouteConfig;
  }
  interface FastifyReply {
    /** Declares that this request did nothing yet: its claim is released and nothing is stored. */
    notStarted(): FastifyReply;
  }
}
