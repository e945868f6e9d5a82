export type { IdempotencyOptions, IdempotencyRequest } from "@idempotency/core";
export { idempotency, idempotencySignal, idempotencyTransaction, notStarted } from "./middleware.js";
