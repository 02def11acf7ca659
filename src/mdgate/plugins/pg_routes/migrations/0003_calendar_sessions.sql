-- Trading-calendar overrides per exchange and day (special sessions such as
-- Muhurat trading, extra holidays): they win over the config file's
-- [calendars] and the built-in tables. opens/closes NULL: closed all day;
-- both set: the day's only session, in the exchange's local time.
-- Changes NOTIFY mdgate_routes, like the routing tables, so running
-- daemons reload them live.

CREATE TABLE mdgate_calendar_sessions (
    exchange   text NOT NULL CHECK (exchange ~ '^[A-Z][A-Z0-9_]{0,15}$'),
    day        date NOT NULL,
    opens      time,
    closes     time,
    note       text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, day),
    CONSTRAINT calendar_session_both_or_neither CHECK ((opens IS NULL) = (closes IS NULL)),
    CONSTRAINT calendar_session_opens_before_closes CHECK (opens IS NULL OR opens < closes)
);

CREATE TRIGGER mdgate_calendar_sessions_notify_routes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mdgate_calendar_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION mdgate_notify_routes();
