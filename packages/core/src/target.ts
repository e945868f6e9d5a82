/**
 * Splits an HTTP request target into the concrete path (part of the record's identity) and the raw query string
 * (part of the fingerprint), exactly as frameworks route on it: still percent-encoded and never normalised
 * (`/a/%2e%2e/b` stays as it is, since Express and Koa route it as it is). An absolute-form target
 * (`http://host/p?q`, sent to proxies) is reduced to its path and query the same way; a fragment (`#…`, which
 * clients should not send) belongs to neither. Both builds of Node bindings and the Web binding use this one
 * function, so a target means the same record on every framework that routes it alike.
 *
 * @example
 * ```ts
 * import { splitRequestTarget } from "@idempotency/core";
 *
 * splitRequestTarget("/api/orders?dry=1"); // { path: "/api/orders", query: "dry=1" }
 * splitRequestTarget("http://h/zz/%2e%2e/orders#x"); // { path: "/zz/%2e%2e/orders", query: "" }
 * ```
 */
export function splitRequestTarget(target: string): { path: string; query: string } {
  let start = 0;
  if (!target.startsWith("/")) {
    const scheme = target.indexOf("://");
    if (scheme === -1) return { path: target, query: "" }; // "*" (OPTIONS *) or an authority-form target
    start = scheme + 3;
    while (start < target.length && !"/?#".includes(target[start] as string)) start++;
  }
  const hash = target.indexOf("#", start);
  const end = hash === -1 ? target.length : hash;
  const question = target.indexOf("?", start);
  const pathEnd = question === -1 || question > end ? end : question;
  const path = target.slice(start, pathEnd);
  return {
    path: path.startsWith("/") ? path : `/${path}`,
    query: pathEnd === end ? "" : target.slice(pathEnd + 1, end),
  };
}
