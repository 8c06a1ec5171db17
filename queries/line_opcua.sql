-- A production line behind an OPC UA server: per machine per 10 seconds, the temperature and
-- pressure summaries, from values the server publishes every 100 ms.
--
-- Subscribes to every variable below the 'Plant' folder (machines Machine1..MachineN, each
-- with Temperature, Pressure, Speed, ...), one row per value; values with a Bad or Uncertain
-- status are left out. Runs against a server at 127.0.0.1:4840 (the test plant of
-- tests/opcua-server has this address space); until one answers, the source keeps retrying
-- with backoff:
--     weir run queries/line_opcua.sql
-- In a plant: the server's URL, security_policy = 'Basic256Sha256' with username and
-- password = '${OPCUA_PASSWORD}', and the summaries to connector = 'object_store'.

CREATE SOURCE line (node TEXT, value DOUBLE, source_timestamp TIMESTAMP, status TEXT) WITH (
    connector           = 'opcua',
    url                 = 'opc.tcp://127.0.0.1:4840/',
    pki_dir             = 'pki',
    browse              = 'ns=2;s=Plant',
    mode                = 'subscribe',
    sampling_interval   = '100ms',
    publishing_interval = '500ms',
    status_filter       = 'good_only',
    event_time          = 'source_timestamp',
    watermark           = '2s'
);

CREATE SINK summaries WITH (connector = 'file', path = 'out/line_opcua', format = 'parquet');

INSERT INTO summaries
SELECT split_part(node, '/', 1)   AS machine,
       split_part(node, '/', 2)   AS variable,
       window_start, window_end,
       avg(value) AS mean, min(value) AS low, max(value) AS high, count(*) AS samples
FROM TUMBLE(line, source_timestamp, INTERVAL '10' SECOND)
WHERE node LIKE '%/Temperature' OR node LIKE '%/Pressure'
GROUP BY node, window_start, window_end;
