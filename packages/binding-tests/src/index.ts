export { binaryBody, concatBytes, gatedParts, streamChunks, textChunks } from "./bodies.js";
export {
  abandonUpload,
  type HttpRequestInit,
  type HttpResponse,
  httpRequest,
  type OpenRequest,
  openRequest,
} from "./client.js";
export { TableHooks } from "./hooks.js";
export { signalReport } from "./signal.js";
export { type DescribeBindingOptions, describeBindingBehaviour } from "./table.js";
export {
  describeTransactionalBinding,
  type TransactionalAnswer,
  type TransactionalRoute,
  type TransactionalSetup,
} from "./transactional.js";
export type {
  AppFactory,
  AppSetup,
  ConnectionCounter,
  MountMode,
  RouteHooks,
  RouteName,
  RunningApp,
} from "./types.js";
