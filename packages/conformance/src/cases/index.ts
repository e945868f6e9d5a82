import type { StoreCase } from "../harness.js";
import { claimsAbsentKey, reportsLiveInFlight } from "./claim.js";
import { acceptsCallerDeadline, neverAppliesLateBegin } from "./deadline.js";
import { fencesByOwnerToken } from "./fencing.js";
import { extendRenewsLease, neverTakesOverCompleted, takesOverExpiredLease } from "./lease.js";
import { oneWinnerAmongConcurrentBegins, oneWinnerAmongConcurrentTakeovers } from "./race.js";
import {
  answersOrThrowsStoreErrorAfterClose,
  inspectsAndDeletesRecords,
  keepsKeysIndependent,
  sharesDataAcrossInstances,
} from "./records.js";
import { keepsNullAndEmptyResponses, storesResponsesExactly } from "./responses.js";
import { expiresAfterTtl } from "./ttl.js";

export {
  acceptsCallerDeadline,
  answersOrThrowsStoreErrorAfterClose,
  claimsAbsentKey,
  expiresAfterTtl,
  extendRenewsLease,
  fencesByOwnerToken,
  inspectsAndDeletesRecords,
  keepsKeysIndependent,
  keepsNullAndEmptyResponses,
  neverAppliesLateBegin,
  neverTakesOverCompleted,
  oneWinnerAmongConcurrentBegins,
  oneWinnerAmongConcurrentTakeovers,
  reportsLiveInFlight,
  sharesDataAcrossInstances,
  storesResponsesExactly,
  takesOverExpiredLease,
};

/** Every case of the contract, in the order describeStore declares them. */
export const storeCases: readonly StoreCase[] = [
  claimsAbsentKey,
  reportsLiveInFlight,
  oneWinnerAmongConcurrentBegins,
  oneWinnerAmongConcurrentTakeovers,
  storesResponsesExactly,
  keepsNullAndEmptyResponses,
  fencesByOwnerToken,
  extendRenewsLease,
  takesOverExpiredLease,
  neverTakesOverCompleted,
  expiresAfterTtl,
  keepsKeysIndependent,
  inspectsAndDeletesRecords,
  sharesDataAcrossInstances,
  answersOrThrowsStoreErrorAfterClose,
  acceptsCallerDeadline,
];

/** Cases that need describeStore's `stall` option, declared only when it is given. */
export const stallCases: readonly StoreCase[] = [neverAppliesLateBegin];
