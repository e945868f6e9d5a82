import type { Middleware } from "koa";

// The README quick start's `./auth.js`, for its test: a stand-in for the application's authentication.

/** Bearer tokens and the users they authenticate. */
export const USERS: ReadonlyMap<string, { id: string; tenantId: string }> = new Map([
  ["acme-token", { id: "alice", tenantId: "acme" }],
  ["globex-token", { id: "gus", tenantId: "globex" }],
]);

/** Sets `ctx.state.user` from `Authorization: Bearer <token>`, or answers 401. */
export const authenticate: Middleware<{ user: { id: string; tenantId: string } }> = async (ctx, next) => {
  const user = USERS.get(/^Bearer (\S+)$/.exec(ctx.get("authorization"))?.[1] ?? "");
  if (!user) {
    ctx.status = 401;
    return;
  }
  ctx.state.user = user;
  await next();
};
