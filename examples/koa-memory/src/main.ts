import { MemoryStore } from "@idempotency/core";
import { createApp } from "./app.js";

const port = Number(process.env.PORT ?? 3000);
// One process, records in memory: for development and single-instance services.
const { app } = createApp(new MemoryStore({ maxEntries: 100_000 }));

app.listen(port, () => {
  console.log(`orders API on http://localhost:${port} (idempotency records in memory)`);
});
