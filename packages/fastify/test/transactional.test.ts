import { describeTransactionalBinding } from "@idempotency/binding-tests";
import fastify from "fastify";
import { idempotency, idempotencyTransaction, notStarted } from "../src/index.js";
import { createApp, listen } from "./table-app.js";

describeTransactionalBinding("fastify 5", async ({ options, route }) => {
  const app = createApp(fastify);
  await app.register(idempotency, options);
  app.post("/orders", { config: { idempotency: true } }, async (request, reply) => {
    const answer = await route(idempotencyTransaction(request), request.body);
    if (answer.notStarted) notStarted(reply);
    reply.code(answer.status);
    return answer.body;
  });
  return listen(app);
});
