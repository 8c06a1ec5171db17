-- Sparkplug B in, bearing health out, Sparkplug B back: Weir reads a plant's Unified
-- Namespace and publishes its summaries as a Sparkplug edge node of its own, so a SCADA
-- (Ignition or any Sparkplug host) shows them like any other device.
--
-- Edge nodes of group Plant1 publish NBIRTH/DBIRTH with metric names and aliases, then
-- DDATA with aliases only; Weir resolves them, asks a node whose state it lost for a rebirth
-- (rebirth = 'true'), and turns deaths into stale rows. Vibration velocity metrics named
-- 'Vibration' (mm/s) are summarised per device every 10 s.
--
-- Runs against a broker on this machine (e.g. Debian's mosquitto, listening on 1883):
--     weir run queries/sparkplug_bearing_health.sql
-- The summaries appear as spBv1.0/Plant1/DDATA/weir-analytics/<device>.

CREATE SOURCE plant (group VARCHAR, edge_node VARCHAR, device VARCHAR, metric VARCHAR,
                     ts TIMESTAMP, value DOUBLE, is_historical BOOLEAN, stale BOOLEAN) WITH (
    connector   = 'mqtt',
    url         = 'mqtt://127.0.0.1:1883',
    topic       = 'spBv1.0/Plant1/#',
    format      = 'sparkplug_b',
    rebirth     = 'true',
    event_time  = 'ts',
    -- nodes that store and forward flush up to 10 minutes of history after a reconnect
    watermark   = '10m',
    dead_letter = 'out/sparkplug/dead_letters.ndjson'
);

CREATE SINK scada WITH (
    connector     = 'mqtt',
    url           = 'mqtt://127.0.0.1:1883',
    format        = 'sparkplug_b',
    group         = 'Plant1',
    edge_node     = 'weir-analytics',
    device_column = 'device',
    time_column   = 'window_end'
);

CREATE VIEW bearing_10s AS
SELECT device, window_start, window_end,
       rms(value)          AS rms_mm_s,
       crest_factor(value) AS crest,
       kurtosis(value)     AS kurtosis,
       count(*)            AS samples
FROM TUMBLE(plant, ts, INTERVAL '10' SECOND)
WHERE metric = 'Vibration' AND NOT stale
GROUP BY device, window_start, window_end;

INSERT INTO scada
SELECT device, window_end, rms_mm_s, crest, kurtosis, samples,
       iso10816_zone(rms_mm_s, 'group2_rigid') AS zone
FROM bearing_10s;
