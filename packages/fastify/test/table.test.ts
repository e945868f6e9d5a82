import { describeBindingBehaviour } from "@idempotency/binding-tests";
import fastify from "fastify";
import fastify4 from "fastify4";
import { type FastifyFactory, startTableApp } from "./table-app.js";

describeBindingBehaviour("fastify 5", (setup) => startTableApp(fastify, setup), { parsesBeforeClaim: true });
describeBindingBehaviour(
  "fastify 4",
  (setup) => startTableApp(fastify4 as unknown as FastifyFactory, setup),
  {
    parsesBeforeClaim: true,
  },
);
