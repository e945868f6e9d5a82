/** A small seeded PRNG (mulberry32), so every shuffle and spread in a scenario can be replayed from its seed. */
export function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** The seed of this run: `RELIABILITY_SEED` when set, otherwise the time, printed by every scenario. */
export const SEED = Number(process.env.RELIABILITY_SEED ?? Date.now() % 2_147_483_647);
