export type {
  IdempotencyEvent,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyStore,
} from "@idempotency/core";
export { idempotency, idempotencySignal, notStarted } from "./middleware.js";
