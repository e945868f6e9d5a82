// Express 4 is installed under the `express4` alias for the compatibility run; its API as used here matches
// the Express 5 types.
declare module "express4" {
  import express from "express";
  export default express;
}
