import type { CombinedError } from "urql";
import { apiErrors } from "../api/client";

/** The API's errors as it sent them (message and code), never swallowed. */
export function ErrorList({ error }: { error: CombinedError | undefined | null }) {
  const errors = apiErrors(error);
  if (errors.length === 0) return null;
  return (
    <ul className="errors" role="alert">
      {errors.map((e, i) => (
        <li key={i}>
          {e.message}
          {e.code ? <code>{e.code}</code> : null}
        </li>
      ))}
    </ul>
  );
}
