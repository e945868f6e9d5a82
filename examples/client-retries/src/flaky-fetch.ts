/**
 * A network that loses responses: the request reaches the server and runs there, but for the first
 * `lose` calls the response never comes back, and the caller sees what fetch shows for a connection reset
 * (a `TypeError`). The worst case for a retrying client: the side effect happened, and nobody knows.
 */
export function flakyFetch(lose: number): (request: Request) => Promise<Response> {
  let remaining = lose;
  return async (request) => {
    const response = await fetch(request);
    if (remaining <= 0) return response;
    remaining--;
    await response.body?.cancel();
    throw new TypeError("fetch failed", {
      cause: new Error("other side closed (the network lost the response)"),
    });
  };
}
