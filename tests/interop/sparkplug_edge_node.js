// A Sparkplug B edge node made with Eclipse Tahu's JavaScript client (npm sparkplug-client,
// sparkplug-payload), an implementation independent of Weir, for tests/mqtt.rs.
//
// Usage: node sparkplug_edge_node.js MQTT_URL GROUP EDGE_NODE DEVICE T0_MS
// Reads commands on stdin, one per line:
//   data N       N DDATA messages, alias only, 20 ms of event time apart
//   historical   one DDATA with is_historical metrics, timestamps 60 s before T0
//   gap          skip three sequence numbers before the next message (a seq gap)
//   ddeath       the device's death
//   exit         exit without disconnecting: the broker publishes the NDEATH will
// Prints one JSON line per message it published ({"sent": topic, "payload": {...}}) and per
// event ({"event": "connected" | "rebirth" | "ready"}).
"use strict";
const readline = require("readline");
const sparkplug = require("sparkplug-client");

const [url, groupId, edgeNode, device, t0Text] = process.argv.slice(2);
const t0 = Number(t0Text);

const client = sparkplug.newClient({
  serverUrl: url,
  username: "",
  password: "",
  groupId,
  edgeNode,
  clientId: `tahu-${edgeNode}-${process.pid}`,
  version: "spBv1.0",
  keepalive: 5,
});

// bytes as their UTF-8 text
const log = (o) =>
  process.stdout.write(
    JSON.stringify(o, (k, v) => (v && v.type === "Buffer" && Array.isArray(v.data) ? Buffer.from(v.data).toString() : v)) + "\n"
  );

// every scalar datatype once, in the node's birth
const nodeMetrics = () => [
  { name: "Props/Int8", alias: 1, type: "Int8", value: -5 },
  { name: "Props/Int16", alias: 2, type: "Int16", value: -30000 },
  { name: "Props/Int32", alias: 3, type: "Int32", value: -2000000000 },
  { name: "Props/Int64", alias: 4, type: "Int64", value: -9000000000000 },
  { name: "Props/UInt8", alias: 5, type: "UInt8", value: 250 },
  { name: "Props/UInt16", alias: 6, type: "UInt16", value: 65000 },
  { name: "Props/UInt32", alias: 7, type: "UInt32", value: 4000000000 },
  { name: "Props/UInt64", alias: 8, type: "UInt64", value: 9000000000000 },
  { name: "Props/Float", alias: 9, type: "Float", value: 20.1 },
  { name: "Props/Double", alias: 10, type: "Double", value: 3.141592653589793 },
  { name: "Props/Boolean", alias: 11, type: "Boolean", value: true },
  { name: "Props/String", alias: 12, type: "String", value: "pump, \"seven\"" },
  { name: "Props/DateTime", alias: 13, type: "DateTime", value: t0 - 1000 },
  { name: "Props/Text", alias: 14, type: "Text", value: "line 2" },
  { name: "Props/UUID", alias: 15, type: "UUID", value: "9a1f3c9e-5b7d-4a52-8f0e-2c6d1b4e7a10" },
  { name: "Props/Bytes", alias: 17, type: "Bytes", value: Buffer.from("raw bytes") },
  { name: "Node Control/Rebirth", alias: 16, type: "Boolean", value: false },
];
const deviceMetrics = () => [
  { name: "Vibration", alias: 100, type: "Double", value: 0.5 },
  { name: "Temperature", alias: 101, type: "Float", value: 40.25 },
  { name: "Running", alias: 102, type: "Boolean", value: true },
];

let tick = 0;
let next = t0;

function births() {
  const nbirth = { timestamp: next, metrics: nodeMetrics() };
  client.publishNodeBirth(nbirth);
  log({ sent: `spBv1.0/${groupId}/NBIRTH/${edgeNode}`, payload: nbirth });
  const dbirth = { timestamp: next, metrics: deviceMetrics() };
  client.publishDeviceBirth(device, dbirth);
  log({ sent: `spBv1.0/${groupId}/DBIRTH/${edgeNode}/${device}`, payload: dbirth });
}

function data() {
  next += 20;
  tick += 1;
  const payload = {
    timestamp: next,
    metrics: [
      { alias: 100, type: "Double", value: Math.round(Math.sin(tick) * 1e6) / 1e3, timestamp: next },
      { alias: 101, type: "Float", value: 40 + (tick % 8) * 0.25, timestamp: next },
      { alias: 102, type: "Boolean", value: tick % 3 !== 0, timestamp: next },
    ],
  };
  client.publishDeviceData(device, payload);
  log({ sent: `spBv1.0/${groupId}/DDATA/${edgeNode}/${device}`, payload });
}

function historical() {
  const at = t0 - 60000;
  const payload = {
    timestamp: next,
    metrics: [
      { alias: 100, type: "Double", value: 9.75, timestamp: at, isHistorical: true },
      { alias: 101, type: "Float", value: 38.5, timestamp: at + 10, isHistorical: true },
    ],
  };
  client.publishDeviceData(device, payload);
  log({ sent: `spBv1.0/${groupId}/DDATA/${edgeNode}/${device}`, payload });
}

client.on("birth", () => {
  log({ event: "connected" });
  births();
  log({ event: "ready" });
});

client.on("ncmd", (payload) => {
  for (const m of payload.metrics || []) {
    if (m.name === "Node Control/Rebirth" && m.value === true) {
      log({ event: "rebirth" });
      births();
    }
  }
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === "data") {
    for (let i = 0; i < Number(arg || 1); i++) data();
  } else if (cmd === "historical") {
    historical();
  } else if (cmd === "gap") {
    client.seq = (client.seq + 3) % 256;
  } else if (cmd === "ddeath") {
    const payload = { timestamp: next };
    client.publishDeviceDeath(device, payload);
    log({ sent: `spBv1.0/${groupId}/DDEATH/${edgeNode}/${device}`, payload });
  } else if (cmd === "exit") {
    // no DISCONNECT: the broker publishes the will (the NDEATH with the birth's bdSeq)
    process.exit(0);
  }
  log({ event: "done", cmd });
});
