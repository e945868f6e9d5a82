import { describeTransactionalBinding } from "@idempotency/binding-tests";
import express from "express";
import { idempotency, idempotencyTransaction, notStarted } from "../src/index.js";
import { listen } from "./table-app.js";

describeTransactionalBinding("express 5", ({ options, route }) => {
  const app = express();
  app.post("/orders", idempotency(options), express.json(), async (req, res) => {
    const answer = await route(idempotencyTransaction(req), req.body);
    if (answer.notStarted) notStarted(req);
    res.status(answer.status).json(answer.body);
  });
  return listen(app);
});
