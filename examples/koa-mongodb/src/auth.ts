import type { Middleware } from "koa";

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

/** The app's Koa state: `ctx.state.user` is the authenticated user. */
export interface AuthState {
  user: User;
}

/** Sets `ctx.state.user` from `Authorization: Bearer <token>`, or answers 401 without calling the next middleware. */
export const authenticate: Middleware<AuthState> = async (ctx, next) => {
  const token = /^Bearer (\S+)$/i.exec(ctx.get("authorization"))?.[1];
  const user = token === undefined ? undefined : API_TOKENS.get(token);
  if (!user) {
    ctx.status = 401;
    ctx.set("WWW-Authenticate", "Bearer");
    ctx.body = { error: "send Authorization: Bearer <token>" };
    return;
  }
  ctx.state.user = user;
  await next();
};
