-- What the service bus answered to the connector's registration (its remote_endpoint:
-- id, peer_url, remote_url, delegate_url, contracts, subscribes, labels), stored by the
-- gateway when the bus took the registration, shown by `omsc status`.
ALTER TABLE connector_registration
    ADD COLUMN remote_endpoint jsonb,
    ADD COLUMN remote_endpoint_at timestamptz;
