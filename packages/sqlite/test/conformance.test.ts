import { describeStore } from "@idempotency/conformance";
import Database from "better-sqlite3";
import { afterAll } from "vitest";
import { SqliteStore } from "../src/index.js";
import { tempDirectory } from "./support.js";

const directory = tempDirectory();

// Real time: every instance is a new connection to one file, so the races run across independent handles.
const realTimeFile = `${directory}/real-time.db`;
describeStore("SqliteStore ({ path }, real time)", () => new SqliteStore({ path: realTimeFile }));

// Controlled clock: the suite moves one clock shared by every connection, and never waits.
const clock = { t: 1_700_000_000_000 };
const controlledFile = `${directory}/controlled.db`;
describeStore(
  "SqliteStore ({ path }, controlled clock)",
  () => new SqliteStore({ path: controlledFile, now: () => clock.t }),
  {
    advanceTime: (ms) => {
      clock.t += ms;
    },
  },
);

// Connections the user owns: the store never closes them, so the test does.
const ownedFile = `${directory}/owned.db`;
const connections: Database.Database[] = [];
afterAll(() => {
  for (const connection of connections) connection.close();
});
describeStore("SqliteStore ({ database }, FULL, custom table)", () => {
  const database = new Database(ownedFile);
  connections.push(database);
  return new SqliteStore({ database, table: "idempotency_keys", synchronous: "FULL" });
});
