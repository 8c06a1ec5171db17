-- Vibration severity by each machine's own class: ISO 10816-3 zones differ by machine group
-- (size) and foundation (rigid or flexible), so the same 3 mm/s is "C: restricted" for a
-- medium machine on a rigid foundation and "B: unrestricted" for a large one. The class, a
-- machine's own RMS limit, its site and asset id come from an asset table (assets.csv next to
-- this file), joined with the raw samples before the window. Edit the file while Weir runs:
-- it is read again within `reload` (a Kubernetes ConfigMap update included).
--
-- Runs as is against the generator (M2 has a growing bearing fault; M1's own limit is tight):
--     weir run queries/vibration_zone_by_class.sql
-- In a plant: the vibration gateway over MQTT or OPC UA instead of the generator, the asset
-- table exported from the CMMS/ERP, and connector = 'object_store' / 'mqtt' sinks.

CREATE SOURCE vibration (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector  = 'generator',
    machines   = '4',
    sensors    = 'vib_x',
    interval   = '1ms',
    rate       = 'max',
    duration   = '3m',
    start      = '2026-01-01T00:00:00Z',
    faults     = 'M2:bearing',
    event_time = 'ts',
    watermark  = '1s'
);

CREATE TABLE assets (
    machine VARCHAR, class VARCHAR, rms_limit DOUBLE, site VARCHAR, asset_id VARCHAR,
    PRIMARY KEY (machine)
) WITH (connector = 'file', path = 'assets.csv', reload = '30s');

CREATE SINK summaries WITH (connector = 'file', path = 'out/vibration_zone', format = 'parquet');
CREATE SINK alerts    WITH (connector = 'stdout', format = 'ndjson');

-- Enrich before the window: the class decides the zone of each machine's RMS.
CREATE VIEW zone_1m AS
SELECT v.machine, a.asset_id, a.site, a.class, window_start, window_end,
       rms(v.value)                           AS rms_mm_s,
       iso10816_zone(rms(v.value), a.class)   AS iso_zone,
       count(*)                               AS samples
FROM TUMBLE(vibration, ts, INTERVAL '1' MINUTE) v
JOIN assets a ON v.machine = a.machine
GROUP BY v.machine, a.asset_id, a.site, a.class, window_start, window_end;

INSERT INTO summaries SELECT * FROM zone_1m;

-- Zone C (restricted operation) or D (damage occurs) for the machine's class.
INSERT INTO alerts
SELECT machine, asset_id, site, window_end, 'iso_zone' AS alert, class, iso_zone, rms_mm_s
FROM zone_1m
WHERE iso_zone IN ('C', 'D');

-- Enrich after the window: a machine's own limit, tighter than its ISO zone (a precision
-- spindle, a machine under observation). LEFT JOIN: a machine missing from the table still
-- reaches the alert, flagged, instead of vanishing.
INSERT INTO alerts
SELECT z.machine, z.asset_id, z.site, z.window_end,
       CASE WHEN a.rms_limit IS NULL THEN 'not_in_asset_table' ELSE 'own_limit' END AS alert,
       z.class, z.iso_zone, z.rms_mm_s
FROM zone_1m z LEFT JOIN assets a ON z.machine = a.machine
WHERE a.rms_limit IS NULL OR z.rms_mm_s > a.rms_limit;
