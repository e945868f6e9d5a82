export {
  type GaveUpDetails,
  type GiveUpLimit,
  IdempotencyInProgressError,
  IdempotencyKeyLockedError,
  IdempotencyKeyReusedError,
  IdempotentFetchBodyError,
  IdempotentFetchError,
  IdempotentFetchGaveUpError,
  IdempotentFetchOptionsError,
  type RetryReason,
} from "./errors.js";
export {
  createIdempotentFetch,
  type IdempotentFetch,
  type IdempotentResponse,
  idempotentFetch,
} from "./fetch.js";
export {
  DEFAULT_RETRY_ON,
  type FetchFunction,
  type IdempotentFetchOptions,
  type RetryEvent,
} from "./options.js";
export { PROBLEM_TYPES, type ProblemDetails, parseProblem } from "./problem.js";
