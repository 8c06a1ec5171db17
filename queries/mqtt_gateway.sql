-- Vibration from an MQTT gateway: per-machine summaries each 10 s, alerts published back.
--
-- The gateway publishes one JSON message per reading on factory/<line>/<machine>/<sensor>:
--     {"ts": 1767225600000, "data": {"value": 4.2}}
-- The topic levels fill the line, machine and sensor columns.
--
-- Runs against a broker on this machine (e.g. Debian's mosquitto, listening on 1883):
--     weir run queries/mqtt_gateway.sql
-- and try it with
--     mosquitto_pub -t factory/L1/M1/vib_x -m '{"ts": 1767225600000, "data": {"value": 9.5}}'
--     mosquitto_sub -t 'alerts/#' -v
-- In a plant: mqtts:// with ca_file, username/password from ${ENV} variables, a fixed
-- client_id with clean_session = 'false', and the summaries to connector = 'object_store'.

CREATE SOURCE gateway (line VARCHAR, machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (
    connector   = 'mqtt',
    url         = 'mqtt://127.0.0.1:1883',
    topic       = 'factory/{line}/{machine}/{sensor}',
    qos         = '1',
    json_paths  = 'value = data.value',
    event_time  = 'ts',
    watermark   = '2s',
    dead_letter = 'out/mqtt_gateway/dead_letters.ndjson'
);

CREATE SINK summaries WITH (connector = 'file', path = 'out/mqtt_gateway', format = 'parquet');
CREATE SINK alerts WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = 'alerts/{machine}', qos = '1');

CREATE VIEW vibration_10s AS
SELECT line, machine, sensor, window_start, window_end,
       rms(value)          AS rms_mm_s,
       crest_factor(value) AS crest,
       kurtosis(value)     AS kurtosis,
       count(*)            AS samples
FROM TUMBLE(gateway, ts, INTERVAL '10' SECOND)
WHERE sensor LIKE 'vib%'
GROUP BY line, machine, sensor, window_start, window_end;

INSERT INTO summaries SELECT * FROM vibration_10s;

INSERT INTO alerts
SELECT machine, sensor, window_end, rms_mm_s, iso10816_zone(rms_mm_s, 'group2_rigid') AS zone
FROM vibration_10s
WHERE iso10816_zone(rms_mm_s, 'group2_rigid') IN ('C', 'D');
