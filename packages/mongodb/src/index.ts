export { MAX_RESPONSE_BYTES, MongoResponseTooLargeError, MongoStore } from "./mongo-store.js";
export type { MongoStoreDocument, MongoStoreOptions, MongoStoreWriteConcern } from "./options.js";
