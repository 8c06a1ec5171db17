-- Fleet-wide bearing health, in the cloud: the worst machines of every site, ranked, from
-- the 1-minute bearing summaries every node's Weir uploads into one bucket. Not a Weir
-- pipeline: a query for DuckDB (1.1 or later) over the bucket.
--
-- On each node, queries/bearing_health.sql with its summaries going to an object-store sink
-- named `bearing` (one Weir per node; every key carries the node, a `node=` partition):
--     CREATE SINK bearing WITH (connector = 'object_store', url = 's3://plant-fleet/summaries', ...);
--     INSERT INTO bearing SELECT * FROM bearing_1m;
-- Then, anywhere with DuckDB and read access to the bucket (CREATE SECRET for S3 first):
--     duckdb -c "SET VARIABLE summaries = 's3://plant-fleet/summaries';
--                SET VARIABLE since = TIMESTAMP '2026-01-01 00:00:00';
--                .read queries/cloud/fleet_bearing_health.sql"
--
-- A node that was offline uploads its spilled files when it returns: they land in the dt/hour
-- partitions of their windows, so a query over recent days sees them once they arrive.

WITH minutes AS (
    SELECT node AS site, machine, window_start, rms_mm_s, kurtosis, crest, hf_energy, iso_zone
    FROM read_parquet(getvariable('summaries') || '/pipeline=bearing/**/*.parquet',
                      hive_partitioning = true)
    WHERE window_start >= getvariable('since')
),
per_machine AS (
    SELECT site, machine,
           count(*)                                  AS minutes,
           avg(rms_mm_s)                             AS rms_mm_s,
           avg(kurtosis)                             AS kurtosis,
           max(crest)                                AS worst_crest,
           avg(hf_energy)                            AS hf_energy,
           count(*) FILTER (WHERE iso_zone IN ('C', 'D')) AS minutes_in_zone_c_or_d
    FROM minutes
    GROUP BY site, machine
)
SELECT site, machine, minutes, rms_mm_s, kurtosis, worst_crest, hf_energy, minutes_in_zone_c_or_d,
       rank() OVER (PARTITION BY site ORDER BY kurtosis DESC) AS rank_in_site
FROM per_machine
ORDER BY site, rank_in_site;
