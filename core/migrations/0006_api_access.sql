-- Access to the query API, the only tables query-api writes itself: customer accounts,
-- the people and machines that call the API (each with one role) and their API keys.
-- Keys are stored as the SHA-256 of the token, never the token: a token is 256 random
-- bits, so a fast hash is enough (nothing to brute-force) and lookups stay one index
-- probe. The token is shown once, when the key is created.

CREATE TABLE customers (
    -- The id devices.customer_id and DeviceRegistered.customer_id carry.
    customer_id text        PRIMARY KEY CHECK (customer_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
    name        text        NOT NULL,
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_users (
    user_name   text        PRIMARY KEY CHECK (length(user_name) BETWEEN 1 AND 200),
    -- admin: everything; operator: the whole fleet, devices, tariff assignments,
    -- replays, dead letters; customer: read-only, its own meters only.
    role        text        NOT NULL CHECK (role IN ('admin', 'operator', 'customer')),
    customer_id text        REFERENCES customers (customer_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'customer') = (customer_id IS NOT NULL))
);

CREATE TABLE api_keys (
    -- Public id, also the token's second part (`smk_<key_id>_<secret>`), for listing
    -- and revoking without the secret.
    key_id       text        PRIMARY KEY,
    user_name    text        NOT NULL REFERENCES api_users (user_name),
    token_sha256 bytea       NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    -- Updated when the API loads the key into its cache (at most once a minute).
    last_used_at timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_name);
