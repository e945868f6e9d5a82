// Another writer on a SQLite file: a child process that opens `argv[2]`, takes the write lock with
// `BEGIN <argv[3]>` (IMMEDIATE or EXCLUSIVE) and holds it until the parent sends { type: "release" }; then it
// commits, says { type: "released" } and exits. It answers { type: "locked" } once it holds the lock.
import Database from "better-sqlite3";

const db = new Database(process.argv[2]);
db.pragma("busy_timeout = 10000");
db.exec(`BEGIN ${process.argv[3]}`);
process.send({ type: "locked", pid: process.pid });
process.on("message", (message) => {
  if (message.type !== "release") return;
  db.exec("COMMIT");
  db.close();
  process.send({ type: "released" }, () => process.exit(0));
});
