import { createConnectTransport } from "@connectrpc/connect-node";
import type { TransportFactory } from "./client.js";

/** connect-node over HTTP/1.1: what the CLI uses under Node. */
export const nodeTransport: TransportFactory = ({ baseUrl, socketPath, interceptors }) =>
  createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors, ...(socketPath ? { nodeOptions: { socketPath } } : {}) });
