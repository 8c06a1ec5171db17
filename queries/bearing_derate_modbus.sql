-- Closing the loop: derate a machine whose bearing is failing and raise its
-- maintenance-request coil, through the line's Modbus PLC (one unit per machine).
--
-- WRITING TO A PLC CHANGES HOW A MACHINE RUNS. The register map below is the only place this
-- sink can ever write; check every address against the PLC program, and commission with
-- the dry run (the default: every would-be write is logged, nothing is sent) or with
-- `weir run --no-writes` before setting dry_run = 'false'.
--
-- Runs as is against the generator (machine M2 has a bearing fault), as a dry run:
--     weir run queries/bearing_derate_modbus.sql
-- The log shows `dry run: would write` for unit 2 only, once per target (write_on_change).

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

CREATE SINK plc WITH (
    connector   = 'modbus',
    url         = 'tcp://127.0.0.1:5020',   -- the line's PLC (or a Modbus gateway)
    unit_id     = '1-4',                    -- the only units that may be written: M1..M4
    unit_column = 'unit',
    registers   = 'speed_limit_pct = holding 100 uint16; maintenance_request = coil 10',
    min_interval = '10s',                   -- at most one command per target every 10 s
    dry_run     = 'true'                    -- the default; 'false' once commissioned
);

CREATE VIEW bearing_1m AS
SELECT machine, window_start, window_end,
       kurtosis(value)                           AS kurtosis,
       crest_factor(value)                       AS crest,
       iso10816_zone(rms(value), 'group2_rigid') AS zone
FROM TUMBLE(vibration, ts, INTERVAL '1' MINUTE)
GROUP BY machine, window_start, window_end;

-- Impacts (kurtosis, crest factor) or vibration in ISO 10816 zone D: run at 70% and ask for
-- maintenance. Nothing is written for healthy machines.
INSERT INTO plc
SELECT CAST(substr(machine, 2) AS INT) AS unit,
       70                                AS speed_limit_pct,
       true                              AS maintenance_request
FROM bearing_1m
WHERE kurtosis > 4 OR crest > 3 OR zone = 'D';
