export type { IdempotencyOptions, IdempotencyRequest } from "@idempotency/core";
export { idempotency, idempotencySignal, notStarted } from "./middleware.js";
