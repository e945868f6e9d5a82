import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalJson, canonicalJsonUtf8, MAX_JSON_DEPTH } from "../src/canonical-json.js";

const SEED = 20240501;

describe("canonicalJson: equivalent texts", () => {
  it("ignores member order and insignificant whitespace", () => {
    const a = canonicalJson('{"b":1,"a":{"d":[1, 2],"c":null}}');
    const b = canonicalJson(' \r\n\t{ "a" : { "c" : null , "d" : [ 1 ,2 ] } ,\n "b" : 1 }\n');
    expect(a).toBe('{"a":{"c":null,"d":[1,2]},"b":1}');
    expect(b).toBe(a);
  });

  it("keeps array order", () => {
    expect(canonicalJson("[3, 1, 2]")).toBe("[3,1,2]");
  });

  it("sorts keys by UTF-16 code units of the decoded key", () => {
    expect(canonicalJson('{"b":0,"\\u0061":1,"B":2,"\u00e9":3,"\ud83d\ude00":4,"\uffff":5,"":6}')).toBe(
      '{"":6,"B":2,"a":1,"b":0,"\u00e9":3,"\ud83d\ude00":4,"\uffff":5}',
    );
  });

  it("normalises string escapes to the JSON.stringify form", () => {
    expect(canonicalJson('"\\u0041"')).toBe('"A"');
    expect(canonicalJson('"\\u00e9"')).toBe(canonicalJson('"\u00e9"'));
    expect(canonicalJson('"\\/"')).toBe('"/"');
    expect(canonicalJson('"\\u000A\\n\\u0008\\u001f\\u0022\\u005C"')).toBe('"\\n\\n\\b\\u001f\\"\\\\"');
    expect(canonicalJson('"\\uD83D\\uDE00"')).toBe('"\ud83d\ude00"');
  });

  it("keeps lone surrogates, escaped the way JSON.stringify escapes them", () => {
    expect(canonicalJson('"\\ud800x"')).toBe('"\\ud800x"');
    expect(canonicalJson('"\ud800x"')).toBe('"\\ud800x"');
    expect(canonicalJson('"\\uDC00"')).toBe('"\\udc00"');
  });

  it("treats an escaped key and its plain spelling as the same key", () => {
    expect(canonicalJson('{"\\u0062":1,"a":2}')).toBe('{"a":2,"b":1}');
  });

  it("keeps true, false and null", () => {
    expect(canonicalJson("[true,false,null]")).toBe("[true,false,null]");
  });

  it.each([
    ['"x"', '"x"'],
    ["1", "1"],
    ["null", "null"],
    [" -0.5e-3 ", "-0.5e-3"],
    ["{}", "{}"],
    ["[ ]", "[]"],
  ])("accepts the top-level scalar or empty container %j", (text, expected) => {
    expect(canonicalJson(text)).toBe(expected);
  });
});

describe("canonicalJson: texts that must stay different", () => {
  it("keeps integers beyond 2^53 exact", () => {
    expect(canonicalJson("9007199254740993")).toBe("9007199254740993");
    expect(canonicalJson("9007199254740993")).not.toBe(canonicalJson("9007199254740992"));
  });

  it.each([["1.0"], ["1e2"], ["1E2"], ["1e+2"], ["-0"], ["0.10"], ["123456789012345678901234567890"]])(
    "keeps the number lexeme %s exactly",
    (text) => {
      expect(canonicalJson(`[${text}]`)).toBe(`[${text}]`);
    },
  );

  it("distinguishes 1.0 from 1", () => {
    expect(canonicalJson('{"a":1.0}')).not.toBe(canonicalJson('{"a":1}'));
  });

  it("keeps duplicate keys, in source order, among the sorted members", () => {
    expect(canonicalJson('{"b":1,"a":2,"b":3,"a":1}')).toBe('{"a":2,"a":1,"b":1,"b":3}');
  });
});

describe("canonicalJson: invalid texts", () => {
  it.each([
    [""],
    ["   "],
    ["[1,]"],
    ['{"a":1,}'],
    ["{'a':1}"],
    ["'a'"],
    ["[1] // comment"],
    ["/* c */ 1"],
    ["01"],
    ["-01"],
    [".5"],
    ["1."],
    ["+1"],
    ["-"],
    ["1e"],
    ["1e+"],
    ["0x10"],
    ["NaN"],
    ["Infinity"],
    ["-Infinity"],
    ['"abc'],
    ['"abc\\"'],
    ["[1, 2"],
    ['{"a":1'],
    ["[1] x"],
    ["1 2"],
    ['"a\nb"'],
    ['"a\tb"'],
    ['{"a"}'],
    ['{"a":}'],
    ["{1:2}"],
    ['{"a" 1}'],
    ['{"a":1 "b":2}'],
    ["[1 2]"],
    ['"\\x"'],
    ['"\\u12"'],
    ['"\\u12G4"'],
    ["tru"],
    ["True"],
    ["nulll"],
    ["\u00a01"],
    ["\f1"],
    ["[,1]"],
    ["{,}"],
  ])("rejects %j", (text) => {
    expect(canonicalJson(text)).toBeUndefined();
  });

  it(`accepts ${MAX_JSON_DEPTH} nested containers and rejects one more without throwing`, () => {
    expect(canonicalJson("[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH))).toBe(
      "[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH),
    );
    const deeper = MAX_JSON_DEPTH + 1;
    expect(canonicalJson("[".repeat(deeper) + "]".repeat(deeper))).toBeUndefined();
    expect(canonicalJson(`${'{"a":'.repeat(deeper)}1${"}".repeat(deeper)}`)).toBeUndefined();
  });

  it("rejects very deep nesting without overflowing the stack", () => {
    expect(canonicalJson("[".repeat(1_000_000))).toBeUndefined();
    expect(canonicalJson("[".repeat(100_000) + "]".repeat(100_000))).toBeUndefined();
  });
});

/** A deterministic PRNG so a generated seed fully determines a shuffle. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled<T>(items: T[], next: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

/** `value` as JSON with its members shuffled (seeded), indented with `indent` and wrapped in `around`. */
function reorderedText(value: unknown, seed: number, indent: string, around: string): string {
  const next = random(seed);
  // Object.fromEntries defines own properties, so even a "__proto__" key survives the shuffle.
  const shuffleKeys = (_key: string, v: unknown): unknown =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(shuffled(Object.entries(v), next))
      : v;
  return `${around}${JSON.stringify(value, shuffleKeys, indent)}${around}`;
}

/** Writes a JSON string literal for `s`, each code unit randomly raw, `\uXXXX` or a short escape. */
function encodeString(s: string, next: () => number): string {
  const short: Record<string, string> = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "/": "\\/" };
  let out = '"';
  for (const unit of s.split("")) {
    const code = unit.charCodeAt(0);
    const r = next();
    const hex = `\\u${code.toString(16).padStart(4, "0")}`;
    if (r < 0.3) out += r < 0.15 ? hex : hex.toUpperCase().replace("\\U", "\\u");
    else if (short[unit] !== undefined && r < 0.6) out += short[unit];
    else out += code < 0x20 || unit === '"' || unit === "\\" ? hex : unit;
  }
  return `${out}"`;
}

const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code));
const anyString = fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: codeUnit }));

describe("canonicalJson: properties", () => {
  it("preserves the value of any JSON text", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value);
        const canonical = canonicalJson(text);
        expect(canonical).toBeDefined();
        expect(JSON.parse(canonical as string)).toEqual(JSON.parse(text));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("is idempotent", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const canonical = canonicalJson(JSON.stringify(value)) as string;
        expect(canonicalJson(canonical)).toBe(canonical);
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("gives the same output for any member order and whitespace", () => {
    const whitespace = fc.string({ unit: fc.constantFrom(" ", "\t", "\n", "\r"), maxLength: 10 });
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer(), whitespace, whitespace, (value, seed, indent, around) => {
        const reordered = reorderedText(value, seed, indent, around);
        expect(canonicalJson(reordered)).toBe(canonicalJson(JSON.stringify(value)));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("writes any string, however it is escaped, exactly as JSON.stringify does", () => {
    fc.assert(
      fc.property(anyString, fc.integer(), (s, seed) => {
        const expected = JSON.stringify(s);
        expect(canonicalJson(expected)).toBe(expected);
        expect(canonicalJson(encodeString(s, random(seed)))).toBe(expected);
        expect(canonicalJson(`{${encodeString(s, random(seed + 1))}:0}`)).toBe(`{${expected}:0}`);
      }),
      { seed: SEED, numRuns: 1000 },
    );
  });

  it("sorts members by the decoded key however the keys are escaped", () => {
    fc.assert(
      fc.property(fc.uniqueArray(anyString, { maxLength: 8 }), fc.integer(), (keys, seed) => {
        const next = random(seed);
        const text = `{${shuffled(keys, next)
          .map((key) => `${encodeString(key, next)}:${JSON.stringify(key)}`)
          .join(",")}}`;
        const sorted = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        expect(canonicalJson(text)).toBe(
          `{${sorted.map((k) => `${JSON.stringify(k)}:${JSON.stringify(k)}`).join(",")}}`,
        );
      }),
      { seed: SEED, numRuns: 500 },
    );
  });
});

const fatalUtf8 = new TextDecoder("utf-8", { fatal: true });

/** What the fingerprint used before the byte parser: decode (fatal, one BOM dropped), then the string parser. */
function reference(bytes: Uint8Array): string | undefined {
  let text: string;
  try {
    text = fatalUtf8.decode(bytes);
  } catch {
    return undefined;
  }
  const canonical = canonicalJson(text);
  return canonical === undefined ? undefined : Buffer.from(canonical, "utf8").toString("hex");
}

function viaBytes(bytes: Uint8Array): string | undefined {
  const canonical = canonicalJsonUtf8(bytes);
  return canonical === undefined ? undefined : Buffer.from(canonical).toString("hex");
}

const sameAsReference = (bytes: Uint8Array) => expect(viaBytes(bytes)).toBe(reference(bytes));
const utf8Bytes = (text: string) => new Uint8Array(Buffer.from(text, "utf8"));

describe("canonicalJsonUtf8: the same bytes as the string parser", () => {
  it.each([
    '{"b":1,"a":{"d":[1, 2],"c":null}}',
    ' \r\n\t{ "a" : { "c" : null , "d" : [ 1 ,2 ] } ,\n "b" : 1 }\n',
    '{"b":0,"\\u0061":1,"B":2,"\u00e9":3,"\ud83d\ude00":4,"\uffff":5,"":6,"\ue000":7,"\ud7ff":8}',
    '{"\u00e9":1,"e":2,"\u00e8":3}',
    '{"\uffff":1,"\ud83d\ude00":2,"\ue000":3,"\ud7ff":4}',
    '"\\u0041"',
    '"\\uD83D\\uDE00"',
    '"\\ud800x"',
    '{"a":1,"a":0,"A":2,"a":-1}',
    '[{"z":1,"y":[{"b":2,"a":1}]},{"c":{}},[]]',
    '"caf\u00e9 \u2028 \ud83c\udf89 \u007f /"',
    "[true,false,null]",
    " -0.5e-3 ",
    "1E+2",
    "[1.0,-0,1e2,12345678901234567890]",
    "{}",
    "[ ]",
    "",
    " ",
    "tru",
    "falsy",
    "nul",
    "[1,]",
    '{"a":1,}',
    '{"a" 1}',
    "01",
    "1.",
    "-",
    "1e",
    '"\u0001"',
    '"abc',
    '{"a":1}x',
    '{"a":1}{}',
    "[1 2]",
    "\u00a0[]",
  ])("%j", (text) => {
    sameAsReference(utf8Bytes(text));
  });

  it("drops one leading byte order mark, as the decoder does, and no more", () => {
    const bom = [0xef, 0xbb, 0xbf];
    const body = [...utf8Bytes('{ "b": 1, "a": 2 }')];
    expect(Buffer.from(canonicalJsonUtf8(new Uint8Array([...bom, ...body])) as Uint8Array).toString()).toBe(
      '{"a":2,"b":1}',
    );
    sameAsReference(new Uint8Array([...bom, ...body]));
    sameAsReference(new Uint8Array([...bom, ...bom, ...body]));
    sameAsReference(new Uint8Array([0xef, 0xbb]));
  });

  it("refuses bytes that are not UTF-8: truncated, overlong, surrogates, above U+10FFFF", () => {
    for (const bad of [[0xc3], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xff]]) {
      const bytes = new Uint8Array([0x22, ...bad, 0x22]);
      expect(canonicalJsonUtf8(bytes)).toBeUndefined();
      sameAsReference(bytes);
    }
  });

  it(`accepts ${MAX_JSON_DEPTH} nested containers and refuses one more`, () => {
    for (const depth of [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1]) {
      sameAsReference(utf8Bytes(`${"[".repeat(depth)}${"]".repeat(depth)}`));
      sameAsReference(utf8Bytes(`${'{"a":'.repeat(depth - 1)}{}${"}".repeat(depth - 1)}`));
    }
    expect(canonicalJsonUtf8(utf8Bytes("[".repeat(100_000)))).toBeUndefined();
  });

  it("sorts large objects stably, and bodies past the scratch buffer", () => {
    const members = Array.from({ length: 300 }, (_, i) => `"k${(i * 7919) % 97}":${i}`);
    sameAsReference(utf8Bytes(`{${members.join(" , ")}}`));
    const large = JSON.stringify(Array.from({ length: 3000 }, (_, i) => ({ z: i, a: `${i}`.repeat(20) })));
    sameAsReference(utf8Bytes(large));
    expect(large.length).toBeGreaterThan(64 * 1024);
  });

  it("gives each result its own bytes until the next call", () => {
    const first = canonicalJsonUtf8(utf8Bytes('{"b":1,"a":2}')) as Uint8Array;
    expect(Buffer.from(first).toString()).toBe('{"a":2,"b":1}');
    expect(Buffer.from(canonicalJsonUtf8(utf8Bytes("[3]")) as Uint8Array).toString()).toBe("[3]");
  });

  it("matches on any JSON value, reordered and re-spaced", () => {
    const whitespace = fc.string({ unit: fc.constantFrom(" ", "\t", "\n", "\r"), maxLength: 4 });
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer(), whitespace, whitespace, (value, seed, indent, around) => {
        sameAsReference(utf8Bytes(JSON.stringify(value)));
        sameAsReference(utf8Bytes(reorderedText(value, seed, indent, around)));
      }),
      { seed: SEED, numRuns: 1000 },
    );
  });

  it("matches on keys and strings of any code units, however escaped", () => {
    fc.assert(
      fc.property(fc.uniqueArray(anyString, { maxLength: 8 }), fc.integer(), (keys, seed) => {
        const next = random(seed);
        const raw = `{${shuffled(keys, next)
          .map((key) => `${JSON.stringify(key)}:${JSON.stringify(key)}`)
          .join(",")}}`;
        const escaped = `{${shuffled(keys, next)
          .map((key) => `${encodeString(key, next)}:${encodeString(key, next)}`)
          .join(",")}}`;
        sameAsReference(utf8Bytes(raw));
        sameAsReference(utf8Bytes(escaped));
      }),
      { seed: SEED, numRuns: 1000 },
    );
  });

  it("matches on broken JSON: truncated, with a byte changed, inserted or removed", () => {
    const interesting = [
      0x00, 0x09, 0x20, 0x22, 0x2c, 0x2d, 0x2e, 0x30, 0x3a, 0x5b, 0x5c, 0x5d, 0x65, 0x7b, 0x7d, 0x80, 0xc3,
      0xee, 0xef, 0xf0, 0xff,
    ];
    const byte = fc.oneof(fc.constantFrom(...interesting), fc.integer({ min: 0, max: 255 }));
    fc.assert(
      fc.property(fc.jsonValue(), fc.nat(), byte, fc.nat(3), (value, at, b, how) => {
        const bytes = [...utf8Bytes(JSON.stringify(value))];
        const i = at % (bytes.length + 1);
        if (how === 0) bytes.length = i;
        else if (how === 1) bytes[i] = b;
        else if (how === 2) bytes.splice(i, 0, b);
        else bytes.splice(i, 1);
        sameAsReference(new Uint8Array(bytes));
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });

  it("matches on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        sameAsReference(bytes);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });
});
