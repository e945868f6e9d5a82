import { describeBindingBehaviour } from "@idempotency/binding-tests";
import Koa3 from "koa";
import Koa2 from "koa2";
import { startCatalogue } from "./app.js";

// The shared table, over real HTTP on loopback, for each supported Koa major.
describeBindingBehaviour("koa 3", (setup) => startCatalogue(Koa3, setup));
describeBindingBehaviour("koa 2", (setup) => startCatalogue(Koa2, setup));
