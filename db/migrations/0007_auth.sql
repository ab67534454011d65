-- API keys for the OPD and admin roles (the public role needs none).
-- A key is shown once, at creation: ``plk_<id>_<secret>``.  Only the SHA-256 of the
-- whole token is stored; ``id`` is the public prefix used to find the row.

CREATE TABLE api_keys (
    id            text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    role          text NOT NULL CHECK (role IN ('opd', 'admin')),
    opd           text REFERENCES opds (code),
    name          text,
    token_sha256  text NOT NULL CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    -- an OPD key is scoped to exactly one OPD; an admin key to none
    CONSTRAINT api_keys_scope CHECK ((role = 'opd') = (opd IS NOT NULL))
);
CREATE INDEX api_keys_opd ON api_keys (opd) WHERE revoked_at IS NULL;
