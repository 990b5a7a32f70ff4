import { NavLink, Navigate, Route, Routes } from "react-router";
import { useAuth } from "./auth";
import { DevicesPage } from "./pages/Devices";
import { LivePage } from "./pages/Live";
import { SignInPage } from "./pages/SignIn";

export function App() {
  const { token, signOut } = useAuth();
  return (
    <div className="app">
      <header className="topbar">
        <span className="brand">
          <img src="/favicon.svg" alt="" width={22} height={22} /> smartmeter
        </span>
        <nav className="nav" hidden={!token}>
          <NavLink to="/live">Live</NavLink>
          <NavLink to="/devices">Devices</NavLink>
        </nav>
        {token ? (
          <button className="link" onClick={signOut}>
            Sign out
          </button>
        ) : null}
      </header>
      <main>
        {!token ? (
          <SignInPage />
        ) : (
        <Routes>
          <Route path="/" element={<Navigate to="/live" replace />} />
          <Route path="/live/:deviceId?" element={<LivePage />} />
          <Route path="/devices" element={<DevicesPage />} />
          <Route path="*" element={<p className="hint">No such page.</p>} />
        </Routes>
        )}
      </main>
    </div>
  );
}
