export { PostgresStore, type PostgresStoreOptions } from "./postgres-store.js";
export { createTableSql, isValidTableName } from "./statements.js";
