-- Silent sensors: a machine that sends nothing is itself a failure signal (a dead sensor, a
-- cut cable, a gateway that hung), and without help it produces nothing at all. The asset
-- table (assets.csv next to this file) says which machines should report; `fill_keys` gives
-- every one of them a row in every minute — `samples` 0 when nothing came — and an alert
-- fires once a machine has been silent for two minutes in a row.
--
-- Runs as is against the generator: M3 stops sending after its first minute, and M5 is in
-- the asset table but never sends at all:
--     weir run queries/silent_sensors.sql
-- In a plant: the plant's MQTT or OPC UA source instead of the generator; the asset table
-- from a ConfigMap (it is read again when it changes).

CREATE SOURCE telemetry (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector  = 'generator',
    machines   = '4',
    sensors    = 'temp',
    interval   = '1s',
    rate       = 'max',
    duration   = '5m',
    start      = '2026-01-01T00:00:00Z',
    faults     = 'M3:silent',
    event_time = 'ts',
    watermark  = '5s'
);

CREATE TABLE assets (
    machine VARCHAR, class VARCHAR, rms_limit DOUBLE, site VARCHAR, asset_id VARCHAR,
    PRIMARY KEY (machine)
) WITH (connector = 'file', path = 'assets.csv');

CREATE SINK summaries WITH (connector = 'file', path = 'out/silent_sensors', format = 'parquet');
CREATE SINK alerts    WITH (connector = 'stdout', format = 'ndjson');

-- Every machine of the asset table in every minute, silent ones with samples = 0.
CREATE VIEW samples_1m WITH (fill_keys = 'assets.machine') AS
SELECT machine, window_start, window_end, count(*) AS samples, avg(value) AS mean_c
FROM TUMBLE(telemetry, ts, INTERVAL '1' MINUTE)
GROUP BY machine, window_start, window_end;

-- For dashboards: the last known temperature stays visible while a machine is silent.
INSERT INTO summaries
SELECT machine, window_end, samples, mean_c,
       locf(mean_c) OVER (PARTITION BY machine ORDER BY window_end) AS last_known_c
FROM samples_1m;

-- Samples over the last two minutes, every minute.
CREATE VIEW samples_2m AS
SELECT machine, window_end, sum(samples) AS samples
FROM HOP(samples_1m, window_end, INTERVAL '1' MINUTE, INTERVAL '2' MINUTE)
GROUP BY machine, window_start, window_end;

-- Silent for two minutes: alert, with where the machine is.
INSERT INTO alerts
SELECT s.machine, a.asset_id, a.site, s.window_end, 'silent' AS alert, s.samples
FROM samples_2m s JOIN assets a ON s.machine = a.machine
WHERE s.samples = 0;
