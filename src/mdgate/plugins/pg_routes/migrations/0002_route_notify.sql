-- NOTIFY mdgate_routes whenever a table the routing table is built from
-- changes, once per statement (a bulk import sends one notification), so
-- that running daemons reload their routes live.

CREATE FUNCTION mdgate_notify_routes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mdgate_routes', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER providers_notify_routes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION mdgate_notify_routes();
CREATE TRIGGER exchanges_notify_routes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON exchanges
    FOR EACH STATEMENT EXECUTE FUNCTION mdgate_notify_routes();
CREATE TRIGGER exchange_provider_mappings_notify_routes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON exchange_provider_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION mdgate_notify_routes();
CREATE TRIGGER instruments_notify_routes
    AFTER DELETE OR TRUNCATE ON instruments
    FOR EACH STATEMENT EXECUTE FUNCTION mdgate_notify_routes();
CREATE TRIGGER provider_instrument_mappings_notify_routes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON provider_instrument_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION mdgate_notify_routes();
