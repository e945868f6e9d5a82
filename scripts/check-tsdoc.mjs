#!/usr/bin/env node
// Checks that every public export of every publishable package has TSDoc with a summary and an `@example`
// holding a ```ts code block. Public exports are those reachable from the entries in each package.json
// "exports"; re-exports are followed to their declaration, so a type a binding re-exports from core is
// checked once, where core declares it. Members of classes and interfaces are not checked.
//
// Usage: node scripts/check-tsdoc.mjs   (exit 0 when nothing is missing, 1 otherwise)

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const packagesDir = join(root, "packages");

/** Publishable packages: packages/* with a package.json that is not `"private": true`. */
function publishablePackages() {
  const found = [];
  for (const entry of readdirSync(packagesDir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const dir = join(packagesDir, entry.name);
    const manifestPath = join(dir, "package.json");
    if (!existsSync(manifestPath)) continue;
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
    if (manifest.private === true) continue;
    found.push({ name: manifest.name, dir, manifest });
  }
  return found.sort((a, b) => a.name.localeCompare(b.name));
}

/** Every target path in one "exports" value: a string, or nested condition objects. */
function targetsOf(value) {
  if (typeof value === "string") return [value];
  if (value && typeof value === "object") return Object.values(value).flatMap(targetsOf);
  return [];
}

/** The source file behind one export entry: `./dist/X.js` (or `.d.ts`, `.cjs`, `.d.cts`) is `src/X.ts`. */
function sourceOfEntry(pkg, subpath, value) {
  for (const target of targetsOf(value)) {
    const match = /^\.\/(?:dist|src)\/(.+?)(?:\.d)?\.(?:[cm]?js|[cm]?ts)$/.exec(target);
    if (!match) continue;
    const source = join(pkg.dir, "src", `${match[1]}.ts`);
    if (existsSync(source)) return source;
  }
  throw new Error(`${pkg.name}: no source file found for export "${subpath}" (${JSON.stringify(value)})`);
}

/** Export entries that are modules (not `./package.json` or other data files), each with its source file. */
function entriesOf(pkg) {
  const exportsField = pkg.manifest.exports ?? { ".": pkg.manifest.main ?? "./dist/index.js" };
  const map = typeof exportsField === "string" ? { ".": exportsField } : exportsField;
  const entries = [];
  for (const [subpath, value] of Object.entries(map)) {
    if (subpath.endsWith(".json")) continue;
    const specifier = subpath === "." ? pkg.name : `${pkg.name}/${subpath.slice(2)}`;
    entries.push({ specifier, source: sourceOfEntry(pkg, subpath, value) });
  }
  return entries;
}

function loadCompilerOptions() {
  const configPath = join(root, "tsconfig.base.json");
  const { config, error } = ts.readConfigFile(configPath, ts.sys.readFile);
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, "\n"));
  return ts.parseJsonConfigFileContent(config, ts.sys, root, undefined, configPath).options;
}

/** The JSDoc block closest to a declaration (a variable's comment sits on its statement). */
function closestJsDoc(declaration) {
  const blocks = ts.getJSDocCommentsAndTags(declaration).filter((node) => ts.isJSDoc(node));
  return blocks.at(-1);
}

/** Why a declaration's doc falls short, or undefined when it has a summary and a ```ts `@example`. */
function docProblem(declaration) {
  const doc = closestJsDoc(declaration);
  if (!doc) return "no doc comment";
  const problems = [];
  if (!ts.getTextOfJSDocComment(doc.comment)?.trim()) problems.push("no summary");
  const examples = (doc.tags ?? []).filter((tag) => tag.tagName.text === "example");
  if (examples.length === 0) problems.push("no @example");
  else if (!examples.some((tag) => /```ts\b/.test(ts.getTextOfJSDocComment(tag.comment) ?? ""))) {
    problems.push("@example without a ```ts block");
  }
  return problems.length === 0 ? undefined : problems.join(", ");
}

function packageOwning(file, packages) {
  return packages.find((pkg) => file.startsWith(pkg.dir + sep));
}

const packages = publishablePackages();
const entries = packages.flatMap((pkg) => entriesOf(pkg).map((entry) => ({ ...entry, pkg })));

// Resolve the packages' own names to their sources, so a re-export from core lands on core's declaration
// (not on a built dist/*.d.ts, which may be stale or missing).
const paths = Object.fromEntries(entries.map((entry) => [entry.specifier, [entry.source]]));
const program = ts.createProgram({
  rootNames: entries.map((entry) => entry.source),
  options: { ...loadCompilerOptions(), paths, noEmit: true },
});
const checker = program.getTypeChecker();

const checked = new Map(); // declaration node → { name, pkg, location, problem }
for (const entry of entries) {
  const sourceFile = program.getSourceFile(entry.source);
  const moduleSymbol = sourceFile && checker.getSymbolAtLocation(sourceFile);
  if (!moduleSymbol) throw new Error(`${entry.specifier}: ${relative(root, entry.source)} is not a module`);
  for (const exported of checker.getExportsOfModule(moduleSymbol)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    const declarations = symbol.declarations ?? [];
    if (declarations.length === 0) {
      throw new Error(`${entry.specifier}: export "${exported.name}" does not resolve to a declaration`);
    }
    if (declarations.some((declaration) => checked.has(declaration))) continue;
    // Overloads and merged declarations: one documented declaration documents the symbol.
    const problems = declarations.map(docProblem);
    const first = declarations[0];
    const file = first.getSourceFile();
    const { line } = file.getLineAndCharacterOfPosition(first.getStart(file));
    checked.set(first, {
      name: symbol.name === "default" ? exported.name : symbol.name,
      pkg: packageOwning(file.fileName, packages)?.name ?? entry.pkg.name,
      location: `${relative(root, file.fileName)}:${line + 1}`,
      problem: problems.includes(undefined) ? undefined : problems[0],
    });
  }
}

const results = [...checked.values()];
const missing = results.filter((result) => result.problem);
for (const pkg of packages) {
  const own = results.filter((result) => result.pkg === pkg.name);
  const ownMissing = own.filter((result) => result.problem);
  console.log(`${pkg.name}: ${own.length} exports, ${ownMissing.length} missing`);
  for (const result of ownMissing.sort((a, b) =>
    a.location.localeCompare(b.location, "en", { numeric: true }),
  )) {
    console.log(`  ${result.location}  ${result.name}: ${result.problem}`);
  }
}
console.log(`${results.length} exports checked, ${missing.length} missing`);
process.exitCode = missing.length === 0 ? 0 : 1;
