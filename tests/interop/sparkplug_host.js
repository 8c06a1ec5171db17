// A Sparkplug B host made with Eclipse Tahu's JavaScript payload library (npm
// sparkplug-payload) and MQTT.js, independent of Weir, for tests/mqtt.rs: prints every
// Sparkplug message it receives, decoded, and sends Rebirth commands when told.
//
// Usage: node sparkplug_host.js MQTT_URL
// Reads commands on stdin: `rebirth GROUP EDGE_NODE` publishes an NCMD with
// Node Control/Rebirth = true.
// Prints one JSON line per message ({"topic": ..., "payload": {...}}, 64-bit numbers as
// strings) and per event ({"event": "ready" | "done"}).
"use strict";
const readline = require("readline");
const mqtt = require("mqtt");
const payloads = require("sparkplug-payload").get("spBv1.0");

const client = mqtt.connect(process.argv[2], { clientId: `tahu-host-${process.pid}`, clean: true });
const log = (o) => process.stdout.write(JSON.stringify(o) + "\n");

// Long values (64-bit) as decimal strings, everything else as is
const plain = (v) =>
  v !== null && typeof v === "object" && typeof v.toString === "function" && "low" in v && "high" in v
    ? v.toString()
    : Buffer.isBuffer(v) || v instanceof Uint8Array
      ? Buffer.from(v).toString("hex")
      : v;

client.on("connect", () => {
  client.subscribe("spBv1.0/#", { qos: 0 }, () => log({ event: "ready" }));
});

client.on("message", (topic, message) => {
  if (topic.startsWith("spBv1.0/STATE/")) return;
  const p = payloads.decodePayload(message);
  const payload = {
    timestamp: plain(p.timestamp),
    seq: plain(p.seq),
    metrics: (p.metrics || []).map((m) => ({
      name: m.name,
      alias: plain(m.alias),
      type: m.type,
      value: plain(m.value),
      timestamp: plain(m.timestamp),
      isNull: m.isNull,
      isHistorical: m.isHistorical,
    })),
  };
  log({ topic, payload });
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, group, edge] = line.trim().split(/\s+/);
  if (cmd === "rebirth") {
    const body = payloads.encodePayload({
      timestamp: Date.now(),
      metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: true }],
    });
    client.publish(`spBv1.0/${group}/NCMD/${edge}`, Buffer.from(body), { qos: 0 }, () =>
      log({ event: "done", cmd })
    );
  }
});
