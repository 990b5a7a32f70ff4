// Who is signed in (the API's `me`): the role decides which views and actions the
// dashboard offers. The API enforces the same rules; hiding is only a courtesy.

import { createContext, useContext, type ReactNode } from "react";
import { useQuery } from "urql";
import { ME } from "./api/queries";
import type { Me } from "./api/types";

const SessionContext = createContext<Me | null>(null);

export function SessionProvider({ children, fallback }: { children: ReactNode; fallback: ReactNode }) {
  const [result] = useQuery<{ me: Me }>({ query: ME });
  if (!result.data?.me) return <>{fallback}</>;
  return <SessionContext.Provider value={result.data.me}>{children}</SessionContext.Provider>;
}

export function useMe(): Me {
  const me = useContext(SessionContext);
  if (!me) throw new Error("useMe outside SessionProvider");
  return me;
}

export const isStaff = (me: Me) => me.role === "ADMIN" || me.role === "OPERATOR";
export const isAdmin = (me: Me) => me.role === "ADMIN";
