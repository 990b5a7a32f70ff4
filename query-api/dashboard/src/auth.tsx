// The signed-in session: the token the API issued (kept for this browser tab only,
// in sessionStorage) and the GraphQL client that carries it. Signing in or out makes
// a new client, so no cached data of one user is shown to the next.

import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { Provider } from "urql";
import { createApiClients } from "./api/client";

const TOKEN_KEY = "smartmeter.token";

interface AuthState {
  token: string | null;
  signIn(token: string): void;
  signOut(): void;
}

const AuthContext = createContext<AuthState | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [token, setToken] = useState<string | null>(() => sessionStorage.getItem(TOKEN_KEY));
  const signOut = useCallback(() => {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken(null);
  }, []);
  const clients = useMemo(() => createApiClients(token, signOut), [token, signOut]);
  useEffect(() => () => void clients.ws.dispose(), [clients]);

  const signIn = useCallback((next: string) => {
    sessionStorage.setItem(TOKEN_KEY, next);
    setToken(next);
  }, []);
  const state = useMemo(() => ({ token, signIn, signOut }), [token, signIn, signOut]);

  return (
    <AuthContext.Provider value={state}>
      <Provider value={clients.client}>{children}</Provider>
    </AuthContext.Provider>
  );
}

export function useAuth(): AuthState {
  const state = useContext(AuthContext);
  if (!state) throw new Error("useAuth outside AuthProvider");
  return state;
}
