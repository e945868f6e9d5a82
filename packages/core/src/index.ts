export { canonicalJson } from "./canonical-json.js";
export { declareNotStarted, executionSignal, executionTransaction } from "./claims.js";
export { decodeResponse, encodeResponse, type StoredResponse } from "./encoding.js";
export { createIdempotency, type Decision, type Idempotency } from "./engine.js";
export {
  IdempotencyAbortError,
  IdempotencyBodyConsumedError,
  IdempotencyError,
  IdempotencyInProgressError,
  IdempotencyInvalidKeyError,
  IdempotencyKeyLockedError,
  IdempotencyKeyReusedError,
  IdempotencyOptionsError,
  IdempotencyRequestAbortedError,
  IdempotencyRequestTooLargeError,
  IdempotencyResultNotStoredError,
  IdempotencyStoreError,
} from "./errors.js";
export type { IdempotencyEvent, IdempotencyEventBase, IdempotencyEventType } from "./events.js";
export type { Execution } from "./execution.js";
export { FINGERPRINT_ALGORITHM, type FingerprintOption } from "./fingerprint.js";
export type { ForgetTarget } from "./forget.js";
export { DEFAULT_UNREPLAYED_HEADERS, type ResponseHeadersInput } from "./headers.js";
export { type KeyParseResult, parseIdempotencyKey } from "./key.js";
export { MemoryStore, type MemoryStoreOptions } from "./memory-store.js";
export {
  booleanOption,
  checkOptionNames,
  defaultShouldStore,
  type IdempotencyOptions,
  type ResolvedOptions,
  type WholeNumberRule,
  wholeNumberOption,
} from "./options.js";
export {
  type IdempotencyProblem,
  PROBLEM_TYPES,
  type PreparedResponse,
  type ProblemRendering,
  type ProblemType,
} from "./problems.js";
export { isBodylessStatus } from "./replay.js";
export type { IdempotencyRequest } from "./request.js";
export type { RunContext, RunOptions } from "./run.js";
export {
  type BeginArgs,
  type BeginResult,
  decideBegin,
  type HeldRecord,
  type IdempotencyStore,
  isTransactionalStore,
  type StoreCallOptions,
  type StoredRecord,
  type TransactionArgs,
  type TransactionalStore,
  type TransactionOf,
  type TransactionOutcome,
  type TransactionWork,
} from "./store.js";
export { splitRequestTarget } from "./target.js";
export type { TransactionContext } from "./transaction.js";
export { type StoreCall, type StoreInterceptor, type StoreOperation, wrapStore } from "./wrap-store.js";
