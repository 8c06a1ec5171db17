-- Bearing vibration health, per machine per minute.
--
-- A bearing defect shows first as short impacts: kurtosis and crest factor rise while the
-- RMS is still low, and the impacts spread energy into frequencies far above the running
-- speed (13 Hz here). Only these few numbers per machine per minute need to leave the plant.
--
-- Runs as is against the generator (machine M2 has a bearing fault):
--     weir run queries/bearing_health.sql
-- In a plant: replace the source by the vibration gateway, e.g.
--     connector = 'mqtt', url = 'mqtt://broker:1883', topic = 'plant/{machine}/{sensor}', format = 'json'
-- (or an OPC UA server publishing the accelerometer channels), and the sinks by
-- connector = 'object_store' (summaries) and connector = 'mqtt' (alerts back to the plant).

CREATE SOURCE vibration (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector  = 'generator',
    machines   = '4',
    sensors    = 'vib_x',
    interval   = '1ms',             -- 1 kHz sampling per sensor
    rate       = 'max',
    duration   = '3m',
    start      = '2026-01-01T00:00:00Z',
    faults     = 'M2:bearing',
    event_time = 'ts',
    watermark  = '1s'
);

CREATE SINK summaries WITH (connector = 'file', path = 'out/bearing_health', format = 'parquet');
CREATE SINK alerts    WITH (connector = 'stdout', format = 'ndjson');

CREATE VIEW bearing_1m AS
SELECT machine, window_start, window_end,
       rms(value)                                   AS rms_mm_s,
       kurtosis(value)                              AS kurtosis,
       crest_factor(value)                          AS crest,
       band_energy(value, 1000, 100, 500 ORDER BY ts) AS hf_energy,   -- (mm/s)² in 100-500 Hz
       dominant_frequency(value, 1000 ORDER BY ts)  AS dominant_hz,
       iso10816_zone(rms(value), 'group2_rigid')    AS iso_zone,
       count(*)                                     AS samples
FROM TUMBLE(vibration, ts, INTERVAL '1' MINUTE)
GROUP BY machine, window_start, window_end;

INSERT INTO summaries SELECT * FROM bearing_1m;

-- Impacts: a healthy machine's vibration is close to a sine (kurtosis 1.5, crest 1.4).
INSERT INTO alerts
SELECT machine, window_end, 'bearing' AS alert, kurtosis, crest, hf_energy, dominant_hz
FROM bearing_1m
WHERE kurtosis > 4 OR crest > 3;

-- Broadband energy well above the running speed: impacts (or looseness, or cavitation).
-- A healthy machine here has almost none: its vibration is a 13 Hz tone and a little noise.
INSERT INTO alerts
SELECT machine, window_end, 'hf_vibration' AS alert, kurtosis, crest, hf_energy, dominant_hz
FROM bearing_1m
WHERE hf_energy > 0.05;
