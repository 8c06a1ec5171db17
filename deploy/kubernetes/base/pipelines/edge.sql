-- Edge pipeline shipped with the Kubernetes manifests (ConfigMap `weir-pipelines`), run by
-- every node of the fleet (a DaemonSet); all write one bucket, each under its own node=
-- partition (the node id comes from WEIR_NODE_NAME, set from spec.nodeName).
-- synthetic telemetry summarised in 1-second windows and uploaded to the object store
-- named by WEIR_OUTPUT_URL (with WEIR_S3_ENDPOINT and the credentials from the Secret
-- `weir-credentials`). While the uplink is down the summaries wait in the spill directory
-- on the node (hostPath /var/lib/weir) and are uploaded when it returns.
-- Replace the generator with an mqtt, modbus or opcua source for real machines.

CREATE SOURCE telemetry (
    machine VARCHAR, sensor VARCHAR, ts TIMESTAMP, value DOUBLE
) WITH (
    connector  = 'generator',
    machines   = '4',
    sensors    = 'vib_x,vib_y,temp,current',
    rate       = '1000',
    event_time = 'ts',
    watermark  = '200ms'
);

CREATE SINK cloud WITH (
    connector         = 'object_store',
    url               = '${WEIR_OUTPUT_URL}',          -- every key carries this node's id (node=...)
    endpoint          = '${WEIR_S3_ENDPOINT}',
    access_key_id     = '${AWS_ACCESS_KEY_ID}',
    secret_access_key = '${AWS_SECRET_ACCESS_KEY}',
    spill_dir         = '/var/lib/weir/spill',
    spill_max_bytes   = '512MiB',
    roll_interval     = '60s'
);

INSERT INTO cloud
SELECT machine, sensor, window_start, window_end,
       count(*) AS samples, min(value) AS low, avg(value) AS mean, max(value) AS high,
       stddev(value) AS spread
FROM TUMBLE(telemetry, ts, INTERVAL '1' SECOND)
GROUP BY machine, sensor, window_start, window_end;
