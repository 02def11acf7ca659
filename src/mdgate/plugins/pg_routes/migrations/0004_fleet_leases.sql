-- Several instances on one universe (issue 16): heartbeats, connection-slot
-- leases with fencing tokens, and the demand registry of the fan-out tier.
-- Every expiry is the database's now() + ttl, written by the holder.

-- One row per running instance (ingest: lease keeper; fanout: demand
-- publisher), kept alive by its heartbeat; expired rows are dead instances.
CREATE TABLE mdgate_fleet_instances (
    instance   text PRIMARY KEY,
    role       text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Slot i of a provider credential: the rows (provider, credential, i) of
-- every unit of an instance are taken together, with one fencing token.
CREATE TABLE mdgate_leases (
    provider   text NOT NULL,
    credential text NOT NULL,
    slot       integer NOT NULL CHECK (slot >= 0),
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (provider, credential, slot)
);

-- Fencing tokens: every acquisition takes a new, larger one.
CREATE SEQUENCE mdgate_lease_token AS bigint;

-- What the clients of each fan-out instance want (NOTIFY mdgate_demand on change).
CREATE TABLE mdgate_demand (
    instance   text NOT NULL,
    instrument text NOT NULL,
    PRIMARY KEY (instance, instrument)
);
