-- Closing the loop over OPC UA: ask the line's controller to derate a machine whose bearing
-- is failing, by calling its method Plant.Derate(Machine, Percent, Reason) once per machine
-- and change.
--
-- CALLING A METHOD OR WRITING A NODE ON A PLC CHANGES HOW A MACHINE RUNS. The method (and
-- any `nodes`) named below are the only things this sink can ever call or write; the sink
-- checks their data types against the columns when it connects. Commission with the dry run
-- (the default: every would-be call is logged, nothing is sent) or with
-- `weir run --no-writes` before setting dry_run = 'false', and give the sink a user that
-- may do only this (username/password or an X.509 user certificate on a signed and
-- encrypted endpoint).
--
-- Runs against an OPC UA server at opc.tcp://127.0.0.1:4840/ that has the method (the test
-- plant of Weir's tests does), with the generator (machine M2 has a bearing fault):
--     weir run queries/bearing_derate_opcua.sql
-- The log shows `dry run: would write` for M2 only, once (write_on_change).

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

CREATE SINK line WITH (
    connector   = 'opcua',
    url         = 'opc.tcp://127.0.0.1:4840/',
    method      = 'ns=2;s=Plant.Derate',         -- the only thing this sink may do
    arguments   = 'machine, percent, reason',    -- Machine: String, Percent: Double, Reason: String
    method_key  = 'machine',                     -- write_on_change and min_interval per machine
    min_interval = '10s',
    dry_run     = 'true'                         -- the default; 'false' once commissioned
);

CREATE VIEW bearing_1m AS
SELECT machine, window_start, window_end,
       kurtosis(value)                           AS kurtosis,
       crest_factor(value)                       AS crest,
       iso10816_zone(rms(value), 'group2_rigid') AS zone
FROM TUMBLE(vibration, ts, INTERVAL '1' MINUTE)
GROUP BY machine, window_start, window_end;

-- Impacts (kurtosis, crest factor) or vibration in ISO 10816 zone D: run at 70%.
INSERT INTO line
SELECT machine,
       70.0            AS percent,
       'bearing fault' AS reason
FROM bearing_1m
WHERE kurtosis > 4 OR crest > 3 OR zone = 'D';
