-- Motor temperature trend and remaining time before the trip limit.
--
-- Every 30 s, a least-squares line through the last 2 minutes of winding temperature per
-- motor gives the trend (°C/s) and the seconds until it reaches 80 °C. The smoothed trend
-- (ewma) across windows and its anomaly score (zscore) show a motor drifting away from
-- its own history.
--
-- Runs as is against the generator (machine M4 overheats):
--     weir run queries/motor_temperature.sql
-- In a plant: an OPC UA subscription to the drives' temperature nodes
--     connector = 'opcua', url = 'opc.tcp://plc:4840', nodes = '...', mode = 'subscribe'
-- and alerts to connector = 'mqtt'.

CREATE SOURCE motors (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector  = 'generator',
    machines   = '4',
    sensors    = 'temp',
    interval   = '100ms',
    rate       = 'max',
    duration   = '6m',
    start      = '2026-01-01T00:00:00Z',
    faults     = 'M4:overheat',
    event_time = 'ts',
    watermark  = '2s'
);

CREATE SINK alerts WITH (connector = 'stdout', format = 'ndjson');

CREATE VIEW temperature_trend AS
SELECT machine, window_start, window_end,
       avg(value)                          AS temp_c,
       trend_slope(ts, value)              AS slope_c_per_s,
       time_to_threshold(ts, value, 80.0)  AS seconds_to_80c
FROM HOP(motors, ts, INTERVAL '30' SECOND, INTERVAL '2' MINUTE)
GROUP BY machine, window_start, window_end;

CREATE VIEW temperature_scored AS
SELECT machine, window_end, temp_c, slope_c_per_s, seconds_to_80c,
       ewma(slope_c_per_s, 0.5) OVER (PARTITION BY machine ORDER BY window_end) AS slope_smoothed,
       zscore(temp_c, 6)         OVER (PARTITION BY machine ORDER BY window_end) AS temp_zscore
FROM temperature_trend;

-- Less than 10 minutes to the trip limit, on a trend that keeps rising.
INSERT INTO alerts
SELECT machine, window_end, 'overheat' AS alert, temp_c, slope_smoothed, seconds_to_80c
FROM temperature_scored
WHERE seconds_to_80c < 600 AND slope_smoothed > 0.03;
