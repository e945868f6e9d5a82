import { createMiddleware } from "hono/factory";

/** Who sent a request, as the authentication established it. */
export interface User {
  id: string;
  tenantId: string;
}

/**
 * The example's API tokens. A real service verifies a session, a JWT or an API key here instead; what matters
 * for idempotency is that the tenant comes from verified credentials, never from a value the client picks.
 */
export const API_TOKENS: ReadonlyMap<string, User> = new Map([
  ["acme-token", { id: "alice", tenantId: "acme" }],
  ["globex-token", { id: "gus", tenantId: "globex" }],
]);

/** The app's Hono environment: `c.get("user")` is the authenticated user. */
export interface AuthEnv {
  Variables: { user: User };
}

/** Sets `c.get("user")` from `Authorization: Bearer <token>`, or answers 401 without calling the next handler. */
export const authenticate = createMiddleware<AuthEnv>(async (c, next) => {
  const token = /^Bearer (\S+)$/i.exec(c.req.header("authorization") ?? "")?.[1];
  const user = token === undefined ? undefined : API_TOKENS.get(token);
  if (!user) {
    return c.json({ error: "send Authorization: Bearer <token>" }, 401, { "WWW-Authenticate": "Bearer" });
  }
  c.set("user", user);
  await next();
});
