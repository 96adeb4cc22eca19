-- 0006_dns_settings: DNS settings saved through the API (PUT /api/v1/dns), as JSON. While the
-- row exists they are in force instead of the config file's dns section; DELETE /api/v1/dns
-- removes it and the file's settings are in force again.
CREATE TABLE dns_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
