import type { FastifyReply, FastifyRequest } from "fastify";

/** Who sent a request, as the authentication established it. */
export interface User {
  id: string;
  tenantId: string;
}

declare module "fastify" {
  interface FastifyRequest {
    /** The authenticated user: set by `authenticate`, which every route of this app is behind (null before it). */
    user: User | null;
  }
}

/**
 * The example's API tokens. A real service verifies a session, a JWT or an API key here instead (for example
 * with `@fastify/jwt`); what matters for idempotency is that the tenant comes from verified credentials,
 * never from a value the client picks.
 */
export const API_TOKENS: ReadonlyMap<string, User> = new Map([
  ["acme-token", { id: "alice", tenantId: "acme" }],
  ["globex-token", { id: "gus", tenantId: "globex" }],
]);

/** An `onRequest` hook: sets `request.user` from `Authorization: Bearer <token>`, or answers 401. */
export async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const token = /^Bearer (\S+)$/i.exec(request.headers.authorization ?? "")?.[1];
  const user = token === undefined ? undefined : API_TOKENS.get(token);
  if (!user) {
    await reply
      .code(401)
      .header("www-authenticate", "Bearer")
      .send({ error: "send Authorization: Bearer <token>" });
    return;
  }
  request.user = user;
}
