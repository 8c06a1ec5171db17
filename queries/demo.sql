-- Weir demo: synthetic telemetry from 4 machines (one with a bearing fault) summarised
-- in 1-second tumbling and 10-second hopping windows. Runs without any device, broker or
-- cloud; finishes by itself after 30 seconds of event time (about 6 s of wall time).
--
--   weir run queries/demo.sql

CREATE SOURCE telemetry (
    line VARCHAR, machine VARCHAR, sensor VARCHAR,
    ts TIMESTAMP, value DOUBLE
) WITH (
    connector  = 'generator',
    machines   = '4',
    sensors    = 'vib_x,vib_y,temp,current',
    interval   = '10ms',            -- each sensor sampled every 10 ms of event time
    rate       = '8000',            -- rows per second of wall time (5x real time)
    duration   = '30s',             -- 30 s of event time, then the source ends
    start      = '2026-01-01T00:00:00Z',
    faults     = 'M3:bearing',
    disorder   = '50ms',            -- rows arrive up to 50 ms out of order...
    event_time = 'ts',
    watermark  = '100ms'            -- ...and the watermark allows 100 ms
);

CREATE SINK console WITH (connector = 'stdout', format = 'table');
CREATE SINK files   WITH (connector = 'file', path = 'out/demo', format = 'parquet');

-- 1-second summaries of vibration per machine and sensor.
CREATE VIEW vibration_1s AS
SELECT machine, sensor, window_start, window_end,
       count(*)                       AS samples,
       avg(value)                     AS mean,
       sqrt(avg(value * value))       AS rms,
       max(abs(value))                AS peak
FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND)
WHERE sensor LIKE 'vib_%'
GROUP BY machine, sensor, window_start, window_end;

-- 10-second windows every 5 seconds: temperature and current per machine.
CREATE VIEW machine_10s AS
SELECT machine, window_start, window_end,
       avg(CASE WHEN sensor = 'temp' THEN value END)    AS temp_avg,
       max(CASE WHEN sensor = 'current' THEN value END) AS current_max,
       count(*)                                         AS samples
FROM HOP(telemetry, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)
GROUP BY machine, window_start, window_end;

-- Every 1-second summary goes to local Parquet files.
INSERT INTO files SELECT * FROM vibration_1s;

-- Machines whose vibration peaks are more than three times their RMS (impacts: a bearing
-- fault) are printed, as are the 10-second machine summaries.
INSERT INTO console
SELECT machine, window_start, window_end, 'peak/rms' AS metric, max(peak / rms) AS value
FROM TUMBLE(vibration_1s, window_start, INTERVAL '5' SECOND)
GROUP BY machine, window_start, window_end
HAVING max(peak / rms) > 3;

INSERT INTO console
SELECT machine, window_start, window_end, 'temp_avg' AS metric, temp_avg AS value
FROM machine_10s;
