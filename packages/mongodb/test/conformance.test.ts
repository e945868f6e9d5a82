import { describeStore } from "@idempotency/conformance";
import { MongoClient } from "mongodb";
import { afterAll, describe, it } from "vitest";
import { MongoStore } from "../src/index.js";

// The store contract, against a real MongoDB: set MONGODB_URL (a replica set, e.g.
// mongodb://127.0.0.1:27017/?replicaSet=rs0, or a standalone with MONGODB_WRITE_CONCERN=1).
const url = process.env.MONGODB_URL;

if (url === undefined || url === "") {
  console.log(
    "MongoDB suite NOT RUN: set MONGODB_URL=mongodb://127.0.0.1:27017 to run it (see packages/mongodb/README.md)",
  );
  describe.skip("MongoStore conformance (needs MONGODB_URL)", () => {
    it("runs describeStore against the MongoDB at MONGODB_URL", () => undefined);
  });
} else {
  // Several clients, each with its own connection pool, so the race cases race over separate connections.
  const clients = Array.from({ length: 5 }, () => new MongoClient(url));
  const collectionName = `idempotency_conformance_${process.pid}_${Date.now()}`;
  const collectionOf = (client: MongoClient) =>
    client.db(process.env.MONGODB_DATABASE ?? "idempotency_test").collection(collectionName);
  const w = process.env.MONGODB_WRITE_CONCERN;
  const writeConcern = w === undefined ? undefined : { w: /^\d+$/.test(w) ? Number(w) : w };
  let next = 0;

  afterAll(async () => {
    await collectionOf(clients[0] as MongoClient)
      .drop()
      .catch(() => undefined);
    await Promise.all(clients.map((client) => client.close()));
  });

  describeStore(`MongoStore (${writeConcern ? `w: ${String(writeConcern.w)}` : "w: majority"})`, () => {
    const client = clients[next++ % clients.length] as MongoClient;
    return new MongoStore({ collection: collectionOf(client), ...(writeConcern ? { writeConcern } : {}) });
  });
}
