// One relay connection for all tabs: open this page in several tabs of one
// browser; one tab leads (holds the connection), the others speak through it.
// Bundle it as the browser test does:
//   npx esbuild examples/tabs/app.ts --bundle --format=esm --outfile=build-test/tabs-app.js
// then open examples/tabs/index.html?relay=<url>&token=<jwt>&room=<room>.
import { shareConnection } from "../../src/tabs/index.js";

const params = new URLSearchParams(location.search);
const shared = shareConnection(params.get("relay") ?? location.origin, { token: params.get("token") ?? undefined });
const room = shared.join<string>(params.get("room") ?? "lobby");
const log = document.getElementById("log");

room.on("message", (m) => {
  const item = document.createElement("li");
  item.textContent = m.data;
  log?.append(item);
});
shared.on("leader", (leading) => {
  document.body.dataset.leader = leading ? "1" : "0";
});
void room.ready.then(() => {
  document.body.dataset.ready = "1";
});
// For the test (and a console): send from this tab, or leave the room.
Object.assign(globalThis, { edgewireSend: (text: string) => room.send("chat", text), edgewireLeave: () => room.leave() });
