// Sign-in with an API key the query-api issued (`smk_<key id>_<secret>`): the key is
// the credential, its user's role (admin, operator, customer) decides what the API
// answers. The key is checked against the API before the dashboard opens.

import { useState } from "react";
import { apiErrors, GRAPHQL_PATH } from "../api/client";
import { useAuth } from "../auth";

export function SignInPage() {
  const { signIn } = useAuth();
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: React.FormEvent) {
    event.preventDefault();
    const token = key.trim();
    if (!token) {
      setError("Paste your API key.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const response = await fetch(GRAPHQL_PATH, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: "query SignIn { me { role } }" }),
      });
      const body = (await response.json()) as { errors?: { message: string; extensions?: Record<string, unknown> }[] };
      const errors = apiErrors({ graphQLErrors: body.errors ?? [] });
      if (errors.length > 0) {
        setError(errors.map((e) => e.message).join("; "));
      } else {
        signIn(token);
      }
    } catch (e) {
      setError(`The API did not answer: ${(e as Error).message}`);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="page signin">
      <form className="panel signin-form" onSubmit={submit} data-testid="signin-form">
        <h2>Sign in</h2>
        <p className="muted">
          With the API key you were given. An administrator or operator sees the whole fleet; a customer sees its own
          meters.
        </p>
        <label className="field">
          <span>API key</span>
          <input
            name="api-key"
            type="password"
            autoComplete="current-password"
            placeholder="smk_…"
            value={key}
            onChange={(e) => setKey(e.target.value)}
            data-testid="api-key"
          />
          {error ? (
            <span className="field-error" role="alert" data-testid="signin-error">
              {error}
            </span>
          ) : null}
        </label>
        <button className="button" type="submit" disabled={busy} data-testid="signin-submit">
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </section>
  );
}
