-- Energy-meter roll-up: per-minute kWh and peak demand per machine.
--
-- Power meters are usually read over Modbus: here the generator stands in for a meter's
-- active-power register polled every 100 ms. Per second the average power is computed;
-- per minute the energy (kWh = Σ kW·s / 3600) and the peak 1-second demand.
--
-- Runs as is against the generator (machine M1 is overloaded):
--     weir run queries/energy_meter.sql
-- In a plant:
--     connector = 'modbus', url = 'tcp://meter:502', unit_id = '1', interval = '100ms',
--     with a register map giving power_kw (float32, holding register) per meter,
-- and the summaries to connector = 'object_store' with a spill_dir for offline periods.

CREATE SOURCE meters (machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector  = 'generator',
    machines   = '3',
    sensors    = 'power_kw',
    interval   = '100ms',
    rate       = 'max',
    duration   = '5m',
    start      = '2026-01-01T00:00:00Z',
    faults     = 'M1:overload',
    event_time = 'ts',
    watermark  = '1s'
);

CREATE SINK rollup WITH (connector = 'file', path = 'out/energy', format = 'parquet');
CREATE SINK alerts WITH (connector = 'stdout', format = 'ndjson');

CREATE VIEW power_1s AS
SELECT machine, window_start, window_end, avg(value) AS kw
FROM TUMBLE(meters, ts, INTERVAL '1' SECOND)
GROUP BY machine, window_start, window_end;

CREATE VIEW energy_1m AS
SELECT machine, window_start, window_end,
       sum(kw) / 3600.0 AS kwh,          -- each 1 s average contributes kW·s
       max(kw)          AS peak_kw,
       count(*)         AS seconds
FROM TUMBLE(power_1s, window_start, INTERVAL '1' MINUTE)
GROUP BY machine, window_start, window_end;

INSERT INTO rollup SELECT * FROM energy_1m;

-- Contracted demand of 60 kW per machine exceeded.
INSERT INTO alerts
SELECT machine, window_end, 'peak_demand' AS alert, peak_kw, kwh
FROM energy_1m
WHERE peak_kw > 60;
