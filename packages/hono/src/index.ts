export type {
  IdempotencyEvent,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyStore,
} from "@idempotency/core";
export { idempotency, idempotencySignal, idempotencyTransaction, notStarted } from "./middleware.js";
