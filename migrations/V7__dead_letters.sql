-- Dead letters, kept where a person can search them. Workers dead-letter a message to its
-- queue's `.dead` queue with the reason in a header; each module's dead-letter keeper moves
-- it here (and acknowledges it only after the insert committed). `omsc dead-letters` lists,
-- shows, replays and discards them. Nothing is ever deleted by hand.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    -- The module queue the message failed on (without the environment prefix).
    queue       text NOT NULL,
    module      text,
    endpoint    text,
    reason      text NOT NULL,
    routing_key text,
    message_id  text,
    attempts    integer NOT NULL DEFAULT 0,
    headers     jsonb NOT NULL,
    content_type text,
    body        bytea NOT NULL,
    dead_at     timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    -- Identifies a dead letter delivered to the keeper twice (a crash between storing and
    -- acknowledging): the same message, dead at the same instant.
    fingerprint text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'discarded')),
    settled_at  timestamptz,
    UNIQUE (queue, fingerprint)
);

CREATE INDEX dead_letters_open ON dead_letters (queue, endpoint, id) WHERE status = 'open';
