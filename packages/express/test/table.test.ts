import { describeBindingBehaviour } from "@idempotency/binding-tests";
import express from "express";
import express4 from "express4";
import { startTableApp } from "./table-app.js";

describeBindingBehaviour("express 5", (setup) => startTableApp(express, 5, setup));
describeBindingBehaviour("express 4", (setup) => startTableApp(express4, 4, setup));
