-- Power meters behind a Modbus TCP gateway: per meter per minute, energy used and peak demand.
--
-- Polls two meters (units 1 and 2) once a second; each poll of a meter is one row, stamped
-- with the time its answer arrived. The register addresses follow a common three-phase
-- meter layout (float32 in input registers, energy as a word-swapped uint32 in 0.1 kWh).
--
-- Runs against a gateway at 127.0.0.1:5020 (any Modbus TCP server with that map will do):
--     weir run queries/power_meter_modbus.sql
-- Until one answers, the source keeps retrying with backoff and counts the skipped polls.
-- In a plant: the gateway's address, and the summaries to connector = 'object_store'.

CREATE SOURCE meters (meter INT, ts TIMESTAMP, voltage_l1 DOUBLE, current_l1 DOUBLE,
                      power_kw DOUBLE, energy_kwh DOUBLE, frequency DOUBLE) WITH (
    connector   = 'modbus',
    url         = 'tcp://127.0.0.1:5020',
    unit_id     = '1,2',
    unit_column = 'meter',
    interval    = '1s',
    timeout     = '500ms',
    registers   = 'voltage_l1 = input 0 float32;  current_l1 = input 6 float32;
                   power_kw   = input 52 float32 scale=0.001;
                   energy_kwh = input 342 uint32 CDAB scale=0.1;  frequency = input 70 float32',
    event_time  = 'ts',
    watermark   = '2s'
);

CREATE SINK summaries WITH (connector = 'file', path = 'out/power_meter', format = 'parquet');

INSERT INTO summaries
SELECT meter, window_start, window_end,
       max(energy_kwh) - min(energy_kwh) AS kwh,
       max(power_kw)                     AS peak_kw,
       avg(voltage_l1)                   AS mean_voltage,
       min(frequency)                    AS min_frequency,
       count(*)                          AS polls
FROM TUMBLE(meters, ts, INTERVAL '1' MINUTE)
GROUP BY meter, window_start, window_end;
