import { NavLink, Navigate, Route, Routes } from "react-router";
import { useQuery } from "urql";
import { ME } from "./api/queries";
import { useAuth } from "./auth";
import { ErrorList } from "./components/ErrorList";
import { BillingPage } from "./pages/Billing";
import { DevicesPage } from "./pages/Devices";
import { LivePage } from "./pages/Live";
import { SignInPage } from "./pages/SignIn";
import { TariffsPage } from "./pages/Tariffs";
import { isStaff, SessionProvider, useMe } from "./session";

export function App() {
  const { token } = useAuth();
  return (
    <div className="app">
      {!token ? (
        <>
          <TopBar />
          <main>
            <SignInPage />
          </main>
        </>
      ) : (
        <SessionProvider fallback={<Loading />}>
          <TopBar signedIn />
          <main>
            <Routes>
              <Route path="/" element={<Navigate to="/live" replace />} />
              <Route path="/live/:deviceId?" element={<LivePage />} />
              <Route path="/devices" element={<DevicesPage />} />
              <Route path="/billing/:deviceId?" element={<BillingPage />} />
              <Route path="/tariffs" element={<TariffsPage />} />
              <Route path="*" element={<p className="hint">No such page.</p>} />
            </Routes>
          </main>
        </SessionProvider>
      )}
    </div>
  );
}

function Loading() {
  const [result] = useQuery({ query: ME });
  return (
    <>
      <TopBar />
      <main>{result.error ? <ErrorList error={result.error} /> : <p className="hint">Signing in…</p>}</main>
    </>
  );
}

function TopBar({ signedIn = false }: { signedIn?: boolean }) {
  return (
    <header className="topbar">
      <span className="brand">
        <img src="/favicon.svg" alt="" width={22} height={22} /> smartmeter
      </span>
      {signedIn ? <SignedInNav /> : <span className="nav" />}
    </header>
  );
}

function SignedInNav() {
  const me = useMe();
  const { signOut } = useAuth();
  return (
    <>
      <nav className="nav">
        <NavLink to="/live">Live</NavLink>
        <NavLink to="/billing">Billing</NavLink>
        <NavLink to="/devices">Devices</NavLink>
        {isStaff(me) ? <NavLink to="/tariffs">Tariffs</NavLink> : null}
      </nav>
      <span className="who" data-testid="who">
        {me.userName} · {me.role.toLowerCase()}
      </span>
      <button className="link" onClick={signOut}>
        Sign out
      </button>
    </>
  );
}
