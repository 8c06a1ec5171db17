"""Queries a running Weir over Flight with clients written elsewhere: pyarrow's Flight
client (Basic handshake, ListFlights, GetFlightInfo by path, DoGet) and the ADBC Flight SQL
driver (a statement, GetTables via get_objects, GetTableTypes). Prints what they got as JSON.

usage: flight_clients.py HOST:PORT TOKEN
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight


def pyarrow_client(addr, token):
    client = flight.connect(f"grpc://{addr}")
    header = client.authenticate_basic_token(b"operator", token.encode())
    options = flight.FlightCallOptions(headers=[header])
    names = sorted(
        ".".join(p.decode() for p in f.descriptor.path)
        for f in client.list_flights(options=options)
    )
    info = client.get_flight_info(
        flight.FlightDescriptor.for_path("system", "sources"), options
    )
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    return {
        "flights": names,
        "sources": table.select(["name", "connector"]).to_pylist(),
    }


def adbc_client(addr, token):
    out = {}
    # username/password: the driver does the Basic handshake and keeps the bearer token
    with flightsql.connect(
        f"grpc://{addr}", db_kwargs={"username": "operator", "password": token}
    ) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT machine, sensor, n FROM latest.per_second ORDER BY machine, sensor"
            )
            out["latest"] = cur.fetch_arrow_table().to_pylist()
            cur.execute("SELECT name, target FROM system.pipelines ORDER BY name")
            out["pipelines"] = cur.fetch_arrow_table().to_pylist()
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        out["tables"] = sorted(
            f"{s['db_schema_name']}.{t['table_name']}"
            for c in objects
            for s in c["catalog_db_schemas"] or []
            for t in s["db_schema_tables"] or []
        )
        out["catalogs"] = sorted(c["catalog_name"] for c in objects)
        out["table_types"] = sorted(conn.adbc_get_table_types())
    return out


def main():
    addr, token = sys.argv[1], sys.argv[2]
    print(json.dumps({"pyarrow": pyarrow_client(addr, token), "adbc": adbc_client(addr, token)}))


if __name__ == "__main__":
    main()
