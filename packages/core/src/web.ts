/**
 * Helpers for bindings on the Fetch API (`Request` and `Response`, as in Hono): the parts of handing a
 * handler's `Response` to the engine that do not depend on the framework.
 *
 * @packageDocumentation
 */
export { captureWebResponse, type KnownBody } from "./web-capture.js";
