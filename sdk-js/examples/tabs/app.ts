// One relay connection for all tabs: open this page in several tabs of one
// browser; the connection lives in a shared worker (`mode=worker`, the
// default), or in one tab chosen by Web Locks (`mode=locks`), or each tab
// keeps its own (`mode=alone`). Bundle it as the browser test does:
//   npx esbuild examples/tabs/app.ts --bundle --format=esm --outfile=build-test/tabs-app.js
//   npx esbuild examples/tabs/worker.ts --bundle --format=esm --outfile=build-test/tabs-worker.js
// then open examples/tabs/index.html?relay=<url>&token=<jwt>&room=<room>.
import { shareConnection } from "../../src/tabs/index.js";

const params = new URLSearchParams(location.search);
const mode = params.get("mode") ?? "worker";
const shared = shareConnection(params.get("relay") ?? location.origin, {
  token: params.get("token") ?? undefined,
  worker: mode === "worker" ? new URL("./tabs-worker.js", import.meta.url) : undefined,
  share: mode !== "alone",
});
const room = shared.join<string, { tab: string }>(params.get("room") ?? "lobby");
const log = document.getElementById("log");
document.body.dataset.mode = shared.mode;

room.on("message", (m) => {
  const item = document.createElement("li");
  item.textContent = m.data;
  log?.append(item);
});
shared.on("leader", (leading) => {
  document.body.dataset.leader = leading ? "1" : "0";
});
shared.on("error", (e) => {
  document.body.dataset.error = e.message;
});
void room.ready.then(() => {
  document.body.dataset.ready = "1";
  document.body.dataset.self = room.self?.id ?? "";
});
// For the test (and a console): send, leave, answer and make requests from this tab.
Object.assign(globalThis, {
  edgewireSend: (text: string) => room.send("chat", text),
  edgewireLeave: () => room.leave(),
  edgewireHandle: (method: string, answer: string) => room.handle(method, () => answer),
  edgewireRequest: (peer: string, method: string) => room.request(peer, method, undefined, { timeout: 5_000 }),
});
