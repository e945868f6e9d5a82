import type { RequestHandler } from "express";

/** Who sent a request, as the authentication established it. */
export interface User {
  id: string;
  tenantId: string;
}

declare global {
  namespace Express {
    interface Request {
      /** The authenticated user, set by `authenticate` (every route of this app is behind it). */
      user: User;
    }
  }
}

/**
 * The example's API tokens. A real service verifies a session, a JWT or an API key here instead; what matters
 * for idempotency is that the tenant comes from verified credentials, never from a value the client picks.
 */
export const API_TOKENS: ReadonlyMap<string, User> = new Map([
  ["acme-token", { id: "alice", tenantId: "acme" }],
  ["globex-token", { id: "gus", tenantId: "globex" }],
]);

/** Sets `req.user` from `Authorization: Bearer <token>`, or answers 401 without calling the next handler. */
export const authenticate: RequestHandler = (req, res, next) => {
  const token = /^Bearer (\S+)$/i.exec(req.get("authorization") ?? "")?.[1];
  const user = token === undefined ? undefined : API_TOKENS.get(token);
  if (!user) {
    res.status(401).set("www-authenticate", "Bearer").json({ error: "send Authorization: Bearer <token>" });
    return;
  }
  req.user = user;
  next();
};
