import { MemoryStore } from "@idempotency/core";
import { metrics, trace } from "@opentelemetry/api";
import {
  ConsoleMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, ConsoleSpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { createApp } from "./app.js";

// A stand-in for your OpenTelemetry setup (usually @opentelemetry/sdk-node with OTLP exporters, which also
// registers a context manager and HTTP instrumentation): spans as they end, metrics every 10 s, to stdout.
trace.setGlobalTracerProvider(
  new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new ConsoleSpanExporter())] }),
);
metrics.setGlobalMeterProvider(
  new MeterProvider({
    readers: [
      new PeriodicExportingMetricReader({
        exporter: new ConsoleMetricExporter(),
        exportIntervalMillis: 10_000,
      }),
    ],
  }),
);

const port = Number(process.env.PORT ?? 3000);
const { app } = createApp({ store: new MemoryStore() }); // logs go to stdout, one JSON line per event

app.listen(port, () => {
  console.log(`orders API on http://localhost:${port}: idempotency logs, spans and metrics on stdout`);
});
