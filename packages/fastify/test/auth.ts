import type { FastifyReply, FastifyRequest } from "fastify";

// The README quick start's `./auth.js`, for its test: a stand-in for the application's authentication.

type User = { id: string; tenantId: string };

/** Bearer tokens and the users they authenticate. */
export const USERS: ReadonlyMap<string, User> = new Map([
  ["acme-token", { id: "alice", tenantId: "acme" }],
  ["globex-token", { id: "gus", tenantId: "globex" }],
]);

/** An `onRequest` hook: sets `request.user` from `Authorization: Bearer <token>`, or answers 401. */
export async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const user = USERS.get(/^Bearer (\S+)$/.exec(request.headers.authorization ?? "")?.[1] ?? "");
  if (!user) {
    await reply.code(401).send();
    return;
  }
  (request as FastifyRequest & { user: User }).user = user;
}
