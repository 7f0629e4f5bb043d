// @ts-check
// A small peer app on the Edgewire SDK: presence and chat in one room.
// Open it with ?relay=<relay url>&token=<jwt>&room=<room>&name=<your name>
// (see README.md beside this file). Type-checked under `--strict`
// (tsconfig.examples.json) through the JSDoc below.
import { Edgewire, RelayError } from "../../dist/index.js";

/** @typedef {{ name: string }} Presence */
/** @typedef {import("../../dist/index.js").PeerInfo<Presence>} Peer */

const params = new URLSearchParams(location.search);
/** The page's element with this id (it has them all). @param {string} id */
const $ = (id) => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element;
};
const textInput = () => {
  const element = $("text");
  if (!(element instanceof HTMLInputElement)) throw new Error("#text is not an input");
  return element;
};
const roomName = params.get("room") ?? "lobby";
const myName = params.get("name") ?? "guest";
const ew = new Edgewire(params.get("relay") ?? location.origin, {
  token: params.get("token") ?? undefined,
  retryWebSocketMs: Number(params.get("retryWs") ?? 30000),
});
$("room").textContent = roomName;
ew.on("state", (s) => ($("state").textContent = s));
ew.on("transport", (t) => ($("transport").textContent = t));

// Every error the SDK reports, with its code: no or bad token (token_missing,
// token_invalid, token_expired), a room the token may not read (forbidden),
// no relay at the URL (unreachable), and the relay's other refusals.
/** @param {Error} e */
function showError(e) {
  const code = e instanceof RelayError ? e.code : "error";
  $("error-code").textContent = code;
  $("error-message").textContent = e.message.startsWith(`${code}: `) ? e.message.slice(code.length + 2) : e.message;
  $("error").hidden = false;
  document.body.dataset.error = code;
}
ew.on("error", showError);
const clearError = () => {
  $("error").hidden = true;
  delete document.body.dataset.error;
};

/** Chat messages are strings; presence says each peer's chosen name. */
/** @type {import("../../dist/index.js").Room<string, Presence>} */
const room = ew.join(roomName, { state: { name: myName } });
/** @param {string} id */
const nameOf = (id) => {
  const peer = id === room.self?.id ? room.self : room.peers.get(id);
  return peer?.state?.name ?? peer?.user ?? id;
};
/** @param {string} text */
const item = (text) => Object.assign(document.createElement("li"), { textContent: text });

function renderPeers() {
  /** @type {Peer[]} */
  const everyone = [...(room.self ? [room.self] : []), ...room.peers.values()];
  $("peers").replaceChildren(...everyone.map((p) => item(nameOf(p.id) + (p.id === room.self?.id ? " (you)" : ""))));
}
room.on("join", renderPeers);
room.on("leave", renderPeers);
room.on("state", renderPeers);
room.on("reset", renderPeers);
room.on("message", (m) => $("log").append(item(`${nameOf(m.from)}: ${m.data}`)));

room.ready.then(() => {
  clearError();
  $("transport").textContent = ew.transport;
  renderPeers();
  document.body.dataset.ready = "1";
});

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = textInput().value.trim();
  if (text) room.send("chat", text).catch(showError);
  textInput().value = "";
});
