// The shared worker that holds the relay connection for every tab of the
// example (bundled as the browser test does:
//   npx esbuild examples/tabs/worker.ts --bundle --format=esm --outfile=build-test/tabs-worker.js).
// In an app: `import { serveTabs } from "edgewire/tabs/worker"; serveTabs();`
import { serveTabs } from "../../src/tabs/worker.js";

serveTabs();
