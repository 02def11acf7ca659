-- mdgate routing tables: providers, exchanges, which provider serves which
-- exchange (priority, primary, active), instruments, and explicit provider
-- codes per instrument.

CREATE TABLE providers (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text    NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    code        text    NOT NULL UNIQUE CHECK (code <> ''),
    display_name text   NOT NULL DEFAULT '',
    rate_limit  integer CHECK (rate_limit IS NULL OR rate_limit > 0),
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN providers.name IS 'provider id as plugins declare it (yahoo, dhan)';
COMMENT ON COLUMN providers.code IS 'provider code stored with every tick (YF, DHAN)';
COMMENT ON COLUMN providers.rate_limit IS 'requests per second the provider allows (informational)';

CREATE TABLE exchanges (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text    NOT NULL UNIQUE CHECK (code ~ '^[A-Z][A-Z0-9_]{0,15}$'),
    name        text    NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE exchange_provider_mappings (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id integer NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    exchange_id integer NOT NULL REFERENCES exchanges (id) ON DELETE CASCADE,
    is_active   boolean NOT NULL DEFAULT true,
    is_primary  boolean NOT NULL DEFAULT false,
    priority    integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, exchange_id)
);
-- At most one primary provider per exchange.
CREATE UNIQUE INDEX exchange_provider_mappings_one_primary
    ON exchange_provider_mappings (exchange_id) WHERE is_primary;

CREATE TABLE instruments (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exchange_id integer NOT NULL REFERENCES exchanges (id) ON DELETE CASCADE,
    symbol      text    NOT NULL CHECK (symbol ~ '^[A-Z0-9^][A-Z0-9.&_^=-]{0,47}$'),
    name        text    NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (exchange_id, symbol)
);
COMMENT ON COLUMN instruments.name IS 'EXCHANGE:SYMBOL, e.g. NSE:RELIANCE';

CREATE TABLE provider_instrument_mappings (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id   integer NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    instrument_id integer NOT NULL REFERENCES instruments (id) ON DELETE CASCADE,
    provider_instrument_search_code text NOT NULL CHECK (provider_instrument_search_code <> ''),
    segment       text,
    security_id   text,
    tick_size     numeric,
    lot_size      integer,
    extra         jsonb   NOT NULL DEFAULT '{}'::jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, instrument_id),
    UNIQUE (provider_id, provider_instrument_search_code)
);
COMMENT ON COLUMN provider_instrument_mappings.provider_instrument_search_code
    IS 'the code the provider streams the instrument under (RELIANCE.NS, NSE_EQ:2885)';
COMMENT ON COLUMN provider_instrument_mappings.extra
    IS 'provider-specific fields (Dhan: segment, security_id, tick_size, lot_size, series)';
CREATE INDEX provider_instrument_mappings_instrument
    ON provider_instrument_mappings (instrument_id);
