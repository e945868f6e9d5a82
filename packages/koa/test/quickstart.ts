// The README's quick start, verbatim except for `export` and the final line (README: `.listen(3000)`);
// readme.test.ts keeps the two in sync and runs this one.

import { MemoryStore } from "@idempotency/core";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import Koa from "koa";
import { idempotency, notStarted } from "../src/index.js";

export const app = new Koa();
const router = new Router();
const guard = idempotency({
  store: new MemoryStore(),
  scope: (request) => request.headers.get("x-user-id") ?? "anonymous",
});

router.post("/orders", guard, bodyParser(), async (ctx) => {
  const { item } = ctx.request.body as { item?: string };
  if (!item) {
    notStarted(ctx); // nothing happened yet: a corrected retry with the same key runs
    ctx.status = 422;
    ctx.body = { error: "item is required" };
    return;
  }
  ctx.status = 201;
  ctx.set("Location", "/orders/1");
  ctx.body = { id: 1, item };
});
app.use(router.routes());
