// koa@2 installed under the alias `koa2` for the compatibility runs; its API is what @types/koa describes.
declare module "koa2" {
  import Koa from "koa";
  export default Koa;
}
