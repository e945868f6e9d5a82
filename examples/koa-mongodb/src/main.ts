import { MongoStore } from "@idempotency/mongodb";
import { MongoClient } from "mongodb";
import { createApp } from "./app.js";

const port = Number(process.env.PORT ?? 3000);
const url = process.env.MONGODB_URL ?? "mongodb://127.0.0.1:27017/?replicaSet=rs0";
// Every process on every host shares the records; the client is the app's, and so is closing it.
const client = new MongoClient(url);
const store = new MongoStore({
  collection: client.db("orders_api").collection("idempotency_records"),
  // A standalone server has no replication: MONGODB_WRITE_CONCERN=1 there. Default "majority".
  ...(process.env.MONGODB_WRITE_CONCERN === "1" ? { writeConcern: { w: 1 } } : {}),
});
await store.ensureIndexes();
const { app } = createApp(store);

const server = app.listen(port, () => {
  console.log(`orders API on http://localhost:${port} (idempotency records in MongoDB at ${url})`);
});
process.once("SIGTERM", () => {
  server.close(() => void client.close());
});
