export type {
  IdempotencyEvent,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyStore,
} from "@idempotency/core";
export { idempotency, notStarted } from "./middleware.js";
