export type { IdempotencyOptions, IdempotencyRequest } from "@idempotency/core";
export { idempotency, notStarted } from "./middleware.js";
