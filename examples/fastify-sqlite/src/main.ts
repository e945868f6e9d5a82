import { SqliteStore } from "@idempotency/sqlite";
import { createApp } from "./app.js";

const path = process.env.DB_PATH ?? "idempotency.db";
const port = Number(process.env.PORT ?? 3000);
const store = new SqliteStore({ path }); // opens (and on close, closes) its own file
const { app } = await createApp(store);
app.addHook("onClose", () => store.close());

await app.listen({ port });
console.log(`orders API on http://localhost:${port} (idempotency records in ${path})`);

process.on("SIGINT", () => {
  void app.close().then(() => process.exit(0));
});
