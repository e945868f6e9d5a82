import { describeTransactionalBinding } from "@idempotency/binding-tests";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import Koa from "koa";
import { idempotency, idempotencyTransaction, notStarted } from "../src/index.js";
import { listen } from "./app.js";

describeTransactionalBinding("koa 3", ({ options, route }) => {
  const app = new Koa();
  app.silent = true;
  const router = new Router();
  router.post("/orders", idempotency(options), bodyParser(), async (ctx) => {
    const answer = await route(idempotencyTransaction(ctx), ctx.request.body);
    if (answer.notStarted) notStarted(ctx);
    ctx.status = answer.status;
    ctx.body = answer.body;
  });
  app.use(router.routes());
  return listen(app);
});
