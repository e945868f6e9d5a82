import { MemoryStore } from "@idempotency/core";
import { describeStore } from "../src/index.js";

const clock = { t: 1_700_000_000_000 };
const store = new MemoryStore({ now: () => clock.t });

describeStore("MemoryStore", () => store, {
  advanceTime: (ms) => {
    clock.t += ms;
  },
});

// Proves the real-time path: real leases, real waits, and the margins they rely on.
const realStore = new MemoryStore();

describeStore("MemoryStore (real time)", () => realStore);
