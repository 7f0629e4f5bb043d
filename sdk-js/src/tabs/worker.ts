/** The `SharedWorker` end of a shared connection (`edgewire/tabs/worker`):
 * a worker script of two lines, `import { serveTabs } from
 * "edgewire/tabs/worker"; serveTabs();`, holds the relay connection for
 * every tab that connects to it, for as long as one tab is open. */
import type { EdgewireOptions } from "../options.js";
import { Holder } from "./holder.js";
import type { Config, FromHolder, ToHolder } from "./said.js";

/** The part of a `SharedWorkerGlobalScope` this uses. */
export interface SharedWorkerScope {
  onconnect: ((event: { readonly ports: readonly MessagePort[] }) => void) | null;
}

/** Serves the tabs that connect to this shared worker: the first tab's
 * config opens the relay connection, which every tab then shares. */
export function serveTabs(scope: SharedWorkerScope = globalThis as unknown as SharedWorkerScope): void {
  /** Each connected tab's port, and the tab's id once it said hello. */
  const ports = new Map<MessagePort, string | undefined>();
  let holder: Holder | undefined;
  const post = (said: FromHolder) => {
    for (const port of ports.keys()) port.postMessage(said);
  };
  const onGone = (tab: string) => {
    for (const [port, id] of ports) if (id === tab) ports.delete(port);
  };
  scope.onconnect = (event) => {
    const port = event.ports[0];
    if (!port) return;
    ports.set(port, undefined);
    port.onmessage = (message: MessageEvent<Config | ToHolder>) => {
      const said = message.data;
      if (said.t === "config") {
        if (holder) return;
        const options = said.options as EdgewireOptions;
        const token = said.tokenFromTab ? () => holder?.askToken() ?? "" : options.token;
        holder = new Holder(said.url, { ...options, token }, post, { onGone });
        return;
      }
      if (said.t === "hello") ports.set(port, said.tab);
      holder?.hear(said);
    };
    port.start();
  };
}
