// The README's quick start, verbatim except for `export` and the final line (README: `.listen(3000)`);
// readme.test.ts keeps the two in sync and runs this one.

import { MemoryStore } from "@idempotency/core";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import Koa, { type ParameterizedContext } from "koa";
import { idempotency, notStarted } from "../src/index.js";
import { authenticate } from "./auth.js"; // yours (koa-passport, koa-jwt, …): sets ctx.state.user or answers 401

type State = { user: { id: string; tenantId: string } };

export const app = new Koa<State>();
const router = new Router<State>();
app.use(authenticate); // before the guard
const guard = idempotency({
  store: new MemoryStore(),
  scope: (request) => (request.native as ParameterizedContext<State>).state.user.tenantId, // who owns the key
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
