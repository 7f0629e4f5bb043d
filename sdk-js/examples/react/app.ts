// The chat example on the React bindings, under StrictMode: presence from
// usePresence, messages from useMessages, the room held by useRoom. Bundled
// with esbuild (no JSX: createElement), as the browser test does:
//   npx esbuild examples/react/app.ts --bundle --format=esm --outfile=build-test/react-app.js
// then open examples/react/index.html?relay=<url>&token=<jwt>&room=<room>&name=<name>.
import { StrictMode, createElement as h, useState } from "react";
import { createRoot } from "react-dom/client";

import { Edgewire } from "../../src/index.js";
import { EdgewireProvider, useMessages, usePresence, useRoom } from "../../src/react/index.js";

type Presence = { name: string };

const params = new URLSearchParams(location.search);
const client = new Edgewire(params.get("relay") ?? location.origin, { token: params.get("token") ?? undefined });
const roomName = params.get("room") ?? "lobby";
const myName = params.get("name") ?? "guest";

function Chat() {
  const room = useRoom<string, Presence>(roomName, { state: { name: myName } });
  const people = usePresence(room);
  const messages = useMessages(room);
  const [text, setText] = useState("");
  const nameOf = (id: string) => people.find((p) => p.id === id)?.state?.name ?? id;
  return h(
    "main",
    null,
    h("h1", null, roomName),
    h("ul", { id: "peers" }, ...people.map((p) => h("li", { key: p.id }, p.state?.name ?? p.user))),
    h("ul", { id: "log" }, ...messages.map((m) => h("li", { key: m.id }, `${nameOf(m.from)}: ${m.data}`))),
    h(
      "form",
      {
        id: "form",
        onSubmit: (e: { preventDefault(): void }) => {
          e.preventDefault();
          if (text.trim()) void room.send("chat", text.trim());
          setText("");
        },
      },
      h("input", { id: "text", value: text, onChange: (e: { target: { value: string } }) => setText(e.target.value) }),
      h("button", { type: "submit" }, "Send"),
    ),
  );
}

const root = document.getElementById("root");
if (!root) throw new Error("the page has no #root");
createRoot(root).render(h(StrictMode, null, h(EdgewireProvider, { client }, h(Chat))));
