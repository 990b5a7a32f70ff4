// One GraphQL client for the whole dashboard: queries and mutations over HTTP POST
// `/graphql`, subscriptions over WebSocket with the `graphql-transport-ws` protocol
// (graphql-ws). Both carry the signed-in token: the HTTP requests in the
// `Authorization` header, the WebSocket in the `connection_init` payload (browsers
// cannot set headers on a WebSocket).

import { Client, cacheExchange, fetchExchange, mapExchange, subscriptionExchange } from "urql";
import { createClient as createWsClient, type Client as WsClient } from "graphql-ws";

/** Where the API is: the page's own origin (query-api serves the dashboard). */
export const GRAPHQL_PATH = "/graphql";
export const GRAPHQL_WS_PATH = "/graphql/ws";

function wsUrl(): string {
  const url = new URL(GRAPHQL_WS_PATH, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

export interface ApiClients {
  client: Client;
  ws: WsClient;
}

/** `onUnauthenticated`: the API refused the token (revoked, expired): sign out. */
export function createApiClients(token: string | null, onUnauthenticated: () => void): ApiClients {
  const authorization = token ? `Bearer ${token}` : undefined;
  const ws = createWsClient({
    url: wsUrl(),
    lazy: true,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    connectionParams: () => (authorization ? { Authorization: authorization } : {}),
  });
  const client = new Client({
    url: GRAPHQL_PATH,
    // Live data arrives by subscription; the rest is fetched when a view opens.
    requestPolicy: "cache-and-network",
    exchanges: [
      mapExchange({
        onError(error) {
          if (token && error.graphQLErrors.some((e) => e.extensions?.code === "UNAUTHENTICATED")) onUnauthenticated();
        },
      }),
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || "" };
          return {
            subscribe(sink) {
              const unsubscribe = ws.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
    fetchOptions: (): RequestInit => ({
      headers: authorization ? { Authorization: authorization } : ({} as Record<string, string>),
    }),
  });
  return { client, ws };
}

/** The typed errors of the API: `extensions.code` and, for bad input, `extensions.argument`. */
export interface ApiError {
  message: string;
  code: string | null;
  argument: string | null;
  field: string | null;
}

interface GraphQLErrorLike {
  message: string;
  extensions?: Record<string, unknown>;
}

export function apiErrors(error: { graphQLErrors?: GraphQLErrorLike[]; networkError?: Error } | undefined | null): ApiError[] {
  if (!error) return [];
  const list: ApiError[] = (error.graphQLErrors ?? []).map((e) => ({
    message: e.message,
    code: typeof e.extensions?.code === "string" ? e.extensions.code : null,
    argument: typeof e.extensions?.argument === "string" ? e.extensions.argument : null,
    field: typeof e.extensions?.field === "string" ? e.extensions.field : null,
  }));
  if (error.networkError) {
    list.push({ message: error.networkError.message, code: "NETWORK", argument: null, field: null });
  }
  return list;
}
