/** Finds the relay binary the tests run: `EDGEWIRE_BIN` when set, else the
 * newest of `target/release/edgewire` (what the README's `cargo run --release`
 * builds) and `target/debug/edgewire` (what `cargo test` builds). Run as a
 * script, it checks that one exists and says in one line what to build. */
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The repository root (this file runs from sdk-js/build-test/test). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** The relay binary to test against; throws a one-line error when there is none. */
export function relayBinary(): string {
  const chosen = process.env.EDGEWIRE_BIN;
  if (chosen) {
    if (!existsSync(chosen)) throw new Error(`EDGEWIRE_BIN=${chosen} does not exist`);
    return chosen;
  }
  const built = ["release", "debug"]
    .map((profile) => path.join(ROOT, "target", profile, "edgewire"))
    .filter((file) => existsSync(file))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  const newest = built[0];
  if (newest === undefined) {
    throw new Error("no relay binary: run `cargo build --release` at the repository root (or set EDGEWIRE_BIN)");
  }
  return newest;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    console.log(`sdk-js tests use the relay ${path.relative(process.cwd(), relayBinary())}`);
  } catch (e) {
    console.error(`sdk-js tests: ${(e as Error).message}`);
    process.exit(1);
  }
}
