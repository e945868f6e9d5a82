/**
 * The private redis-server processes of `@idempotency/redis`'s own tests, reused as they are: each file
 * starts its own on a free loopback port and kills it afterwards. A missing `redis-server` fails the file
 * with instructions; nothing here is ever skipped.
 */
export { RedisServer, startSingle, tempDir } from "../../../packages/redis/test/support/redis-server.js";
