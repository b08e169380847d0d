// The results of tests/bench/run.sh (`make bench`): reads the scenarios'
// outputs from BENCH_TMP, writes one JSON file (argv[2], and
// bench-results/latest.json), prints the figures side by side and then the
// table of issue 12's targets (target, depth-realtime, Node; one line per row).
import fs from "node:fs";
import os from "node:os";

const tmp = process.env.BENCH_TMP;
const read = (f) => (fs.existsSync(`${tmp}/${f}`) ? fs.readFileSync(`${tmp}/${f}`, "utf8").trim() : null);
const readJson = (f) => {
  const t = read(f);
  try { return t ? JSON.parse(t) : null; } catch { return { error: "unparsable loadgen output" }; }
};

const HELD_AND_LOADGEN = ["idle", "echo", "echo_max", "broadcast_cpu", "broadcast_p99", "idle_redis", "idle_shipped",
  "scale", "chat_max", "chat_rate", "allocs_chat", "allocs_echo"];
const servers = {};
for (const name of ["depth-realtime", "node"]) {
  if (!process.env.BENCH_SERVERS.split(/\s+/).includes(name)) continue;
  const s = { status: read(`${name}.status`) ?? "not run", command: read(`${name}.command`) };
  for (const sc of HELD_AND_LOADGEN) {
    const r = readJson(`${name}.${sc}.json`);
    if (!r) continue;
    const command = read(`${name}.${sc}.command`) ?? read(`${name}.${sc.replace(/_(max|rate)$/, "")}.command`);
    if (command) r.command = command;
    s[sc] = r;
  }
  const logText = read(`${name}.log`);
  if (s.status !== "ok" && logText) s.log_tail = logText.split("\n").slice(-20).join("\n");
  // Cross-process fan-out through one Redis, and through a 3-master Redis
  // Cluster (depth-realtime only).
  for (const sc of ["fanout", "fanout_cluster"]) {
    const fanout = readJson(`${name}.${sc}.json`);
    if (!fanout) continue;
    const redisCpu = Number(read(`${sc}.redis_cpu_ms`));
    fanout.command = read(`${sc}.command`);
    if (Number.isFinite(redisCpu)) {
      fanout.redis_cpu_ms = redisCpu;
      if (fanout.delivered > 0) fanout.redis_cpu_per_delivered_us = +(redisCpu * 1000 / fanout.delivered).toFixed(3);
    }
    s[sc] = fanout;
  }
  // Connection state recovery on and off (depth-realtime only).
  const recovery = {};
  for (const mode of ["on", "off"]) {
    const idle = readJson(`recovery.${mode}.idle.json`);
    const cost = readJson(`recovery.${mode}.cost.json`);
    if (name === "depth-realtime" && (idle || cost)) recovery[mode] = { idle, redis: cost };
  }
  if (Object.keys(recovery).length) s.recovery = recovery;
  const ratelimit = name === "depth-realtime" ? readJson("ratelimit.json") : null;
  if (ratelimit) s.ratelimit = ratelimit;
  servers[name] = s;
}

const ours = servers["depth-realtime"] ?? {}, node = servers.node ?? {};
const ratio = (a, b) => (typeof a === "number" && typeof b === "number" && b > 0 ? +(a / b).toFixed(2) : null);
const ratios = {
  // > 1 means depth-realtime is better
  rss_per_conn_node_over_ours: ratio(node.idle?.rss_per_conn_bytes, ours.idle?.rss_per_conn_bytes),
  cpu_per_conn_node_over_ours: ratio(node.idle?.cpu_per_conn_us, ours.idle?.cpu_per_conn_us),
  idle_cpu_node_over_ours: ratio(node.idle?.idle_cpu_per_conn_per_s_us, ours.idle?.idle_cpu_per_conn_per_s_us),
  scale_idle_cpu_node_over_ours: ratio(node.scale?.idle_cpu_per_conn_per_s_us, ours.scale?.idle_cpu_per_conn_per_s_us),
  echo_throughput_ours_over_node: ratio(ours.echo_max?.acks_per_sec, node.echo_max?.acks_per_sec),
  echo_cpu_per_ack_node_over_ours: ratio(node.echo?.cpu_per_ack_us, ours.echo?.cpu_per_ack_us),
  echo_p99_node_over_ours: ratio(node.echo?.latency_p99_ms, ours.echo?.latency_p99_ms),
  broadcast_cpu_node_over_ours: ratio(node.broadcast_cpu?.cpu_per_delivered_us, ours.broadcast_cpu?.cpu_per_delivered_us),
  chat_throughput_ours_over_node: ratio(ours.chat_max?.messages_per_sec, node.chat_max?.messages_per_sec),
  chat_cpu_per_message_node_over_ours: ratio(node.chat_max?.cpu_per_message_us, ours.chat_max?.cpu_per_message_us),
};

// The loadgen shares the machine with the server: when it is near a full core,
// the throughput it reports is a lower bound for the server.
const warnings = [];
for (const [name, s] of Object.entries(servers)) {
  for (const sc of ["echo", "echo_max"]) {
    const r = s[sc];
    if (!r?.loadgen_cpu_echo_ms || !r.duration_seconds) continue;
    const busy = r.loadgen_cpu_echo_ms / (r.duration_seconds * 1000);
    if (busy > 0.8) warnings.push(`${name} ${sc}: the loadgen was ${Math.round(busy * 100)}% busy; acks/s is a lower bound`);
  }
  for (const sc of HELD_AND_LOADGEN) {
    const r = s[sc];
    if (r?.error) warnings.push(`${name} ${sc}: ${r.error}`);
    if (r?.failures > 0) warnings.push(`${name} ${sc}: ${r.failures} connections failed (${r.first_error ?? "?"})`);
    if (r?.lost_after_connect > 0) warnings.push(`${name} ${sc}: ${r.lost_after_connect} connections dropped after connecting`);
    if (r?.dropped > 0) warnings.push(`${name} ${sc}: ${r.dropped} connections dropped while held (${r.first_lost ?? "?"})`);
    if (r?.unacked > 0) warnings.push(`${name} ${sc}: ${r.unacked} events never acked`);
    if (r?.ack_errors > 0) warnings.push(`${name} ${sc}: ${r.ack_errors} events answered with an error (${r.first_ack_error ?? "?"})`);
    if (r?.join_refused > 0) warnings.push(`${name} ${sc}: ${r.join_refused} chat:join refused (${r.first_ack_error ?? "?"})`);
    if (r && typeof r.delivered_ratio === "number" && r.delivered_ratio < 1)
      warnings.push(`${name} ${sc}: ${r.expected_deliveries - r.delivered} of ${r.expected_deliveries} deliveries missing`);
    if (r?.server_status && r.server_status !== "ok") warnings.push(`${name} ${sc}: server ${r.server_status}`);
  }
  for (const sc of ["fanout", "fanout_cluster"]) {
    const fo = s[sc];
    if (fo?.error) warnings.push(`${name} ${sc}: ${fo.error}`);
    if (fo && typeof fo.delivered_ratio === "number" && fo.delivered_ratio < 1)
      warnings.push(`${name} ${sc}: ${fo.expected_deliveries - fo.delivered} of ${fo.expected_deliveries} deliveries missing`);
    if (fo?.loadgen_cpu_measure_ms && fo.duration_seconds && fo.loadgen_cpu_measure_ms / (fo.duration_seconds * 1000) > 0.8)
      warnings.push(`${name} ${sc}: the loadgen was busy over 80%; latency includes its queueing`);
  }
}

// Issue 12's targets, one entry per row of its table: the figure, the target
// (at most `max`, or at least `min`), depth-realtime's and Node's.
const kbOf = (b) => (typeof b === "number" ? +(b / 1024).toFixed(2) : null);
const heldText = (r) => (r && typeof r.held === "number"
  ? `${r.held} held, ${r.dropped} dropped, ${kbOf(r.rss_per_conn_bytes)} KB/conn` : null);
const targets = [
  { measure: "RSS per idle connection, bench.conf, / + /chat, 10,000 clients", unit: "KB", max: 2.0,
    get: (s) => kbOf(s.idle?.rss_per_conn_bytes) },
  { measure: "the same with Redis on", unit: "KB", max: 3.0, get: (s) => kbOf(s.idle_redis?.rss_per_conn_bytes) },
  { measure: "the same with the shipped conf and every app module", unit: "KB", max: 3.0,
    get: (s) => kbOf(s.idle_shipped?.rss_per_conn_bytes), node_note: "node-chat-reference.mjs" },
  { measure: "CPU per connection set up (WS + JWT + 2 namespaces)", unit: "us", max: 80, get: (s) => s.idle?.cpu_per_conn_us },
  { measure: "CPU per acked echo at 10,000 acks/s", unit: "us", max: 15, get: (s) => s.echo?.cpu_per_ack_us },
  { measure: "the same, 100 clients closed loop", unit: "us", max: 6, get: (s) => s.echo_max?.cpu_per_ack_us },
  { measure: "heap allocations per chat:message (stored, acked, broadcast to 20)", max: 60,
    get: (s) => s.allocs_chat?.allocs_per_message, node_note: "n/a (V8 heap)" },
  { measure: "heap allocations per bench:echo", get: (s) => s.allocs_echo?.allocs_per_ack, node_note: "n/a (V8 heap)" },
  { measure: "CPU per delivered broadcast, 1,000 subscribers x 100 msg/s, 200 B", unit: "us", max: 2.5,
    get: (s) => s.broadcast_cpu?.cpu_per_delivered_us },
  { measure: "p99 at 1,000 subscribers x 20 msg/s", unit: "ms", max: 6, get: (s) => s.broadcast_p99?.latency_p99_ms },
  { measure: "connections held over a ping cycle (shipped conf, every app module)", target: "100,000, 0 dropped, <= 3.0 KB/conn",
    check: (r) => r && r.held >= 100000 && r.dropped === 0 && r.rss_per_conn_bytes <= 3 * 1024,
    get: (s) => heldText(s.scale), raw: (s) => s.scale },
  { measure: "CPU per connect at 100,000 connections", unit: "us", max: 80, get: (s) => s.scale?.cpu_per_conn_us },
  { measure: "Redis Pub/Sub channels per connected client", max: 0.1, get: (s) => s.scale?.redis_channels_per_client },
  { measure: "chat: messages/s at saturation (50 x 20, closed loop)", unit: "msg/s", get: (s) => s.chat_max?.messages_per_sec },
  { measure: "chat: CPU per message (servers)", unit: "us", get: (s) => s.chat_max?.cpu_per_message_us },
  { measure: "chat: Redis CPU per message", unit: "us", get: (s) => s.chat_max?.redis_cpu_per_message_us },
  { measure: "chat: delivery p50 / p99 at a fixed rate", unit: "ms",
    get: (s) => (s.chat_rate?.delivery_p99_ms != null ? `${s.chat_rate.delivery_p50_ms} / ${s.chat_rate.delivery_p99_ms}` : null) },
];
const summary = targets.map((t) => {
  const v = t.get(ours), nv = t.get(node);
  const target = t.target ?? (t.max !== undefined ? `<= ${t.max}${t.unit ? " " + t.unit : ""}` : "-");
  let met = null;
  if (t.check) met = v === null ? null : t.check(t.raw(ours));
  else if (t.max !== undefined && typeof v === "number") met = v <= t.max;
  return { measure: t.measure, target, unit: t.unit ?? null, depth_realtime: v ?? null,
    node: nv ?? (t.node_note?.startsWith("n/a") ? t.node_note : null), met };
});

const result = {
  timestamp: process.env.BENCH_STAMP,
  machine: { cpus: os.cpus().length, memory_mb: Math.round(os.totalmem() / 2 ** 20), kernel: os.release(), node: process.version },
  settings: Object.fromEntries(Object.entries(process.env)
    .filter(([k]) => k.startsWith("BENCH_") && k !== "BENCH_TMP" && k !== "BENCH_STAMP")),
  servers,
  ratios,
  summary,
  warnings,
};
const text = JSON.stringify(result, null, 2) + "\n";
fs.writeFileSync(process.argv[2], text);
fs.writeFileSync("bench-results/latest.json", text);

// Human summary: the figures side by side, then the targets.
const f = (v, d = 1) => (typeof v === "number" ? v.toFixed(d) : "-");
const kb = (v) => (typeof v === "number" ? (v / 1024).toFixed(1) + " KB" : "-");
const est = (r) => (r ? `${r.established}/${r.connections}` : "-");
const rows = [
  ["idle: connections established", (s) => est(s.idle), null],
  ["idle: connect time (s)", (s) => f(s.idle?.connect_seconds, 2), null],
  ["idle: RSS per connection", (s) => kb(s.idle?.rss_per_conn_bytes), ratios.rss_per_conn_node_over_ours],
  ["idle: CPU per connection (us)", (s) => f(s.idle?.cpu_per_conn_us), ratios.cpu_per_conn_node_over_ours],
  ["idle: CPU/conn/s held (us)", (s) => f(s.idle?.idle_cpu_per_conn_per_s_us, 3), ratios.idle_cpu_node_over_ours],
  ["idle_redis: RSS per connection", (s) => kb(s.idle_redis?.rss_per_conn_bytes), null],
  ["idle_redis: CPU per conn (us)", (s) => f(s.idle_redis?.cpu_per_conn_us), null],
  ["idle_shipped: RSS per connection", (s) => kb(s.idle_shipped?.rss_per_conn_bytes), null],
  ["idle_shipped: CPU per conn (us)", (s) => f(s.idle_shipped?.cpu_per_conn_us), null],
  ["scale: held / dropped", (s) => (s.scale ? `${s.scale.held} / ${s.scale.dropped}` : "-"), null],
  ["scale: RSS per connection", (s) => kb(s.scale?.rss_per_conn_bytes), null],
  ["scale: CPU per connect (us)", (s) => f(s.scale?.cpu_per_conn_us), null],
  ["scale: CPU/conn/s held (us)", (s) => f(s.scale?.idle_cpu_per_conn_per_s_us, 3), ratios.scale_idle_cpu_node_over_ours],
  ["scale: kernel TCP mem/conn", (s) => kb(s.scale?.kernel_tcp_mem_per_conn_bytes), null],
  ["scale: kernel slab/conn", (s) => kb(s.scale?.kernel_slab_per_conn_bytes), null],
  ["scale: Redis memory/conn", (s) => kb(s.scale?.redis_memory_per_conn_bytes), null],
  ["scale: Redis channels/client", (s) => f(s.scale?.redis_channels_per_client, 3), null],
  ["echo: acks/s at fixed rate", (s) => f(s.echo?.acks_per_sec, 0), null],
  ["echo: latency p50 / p99 (ms)", (s) => `${f(s.echo?.latency_p50_ms, 2)} / ${f(s.echo?.latency_p99_ms, 2)}`, ratios.echo_p99_node_over_ours],
  ["echo: server CPU per ack (us)", (s) => f(s.echo?.cpu_per_ack_us), ratios.echo_cpu_per_ack_node_over_ours],
  ["echo_max: acks/s (closed loop)", (s) => f(s.echo_max?.acks_per_sec, 0), ratios.echo_throughput_ours_over_node],
  ["echo_max: CPU per ack (us)", (s) => f(s.echo_max?.cpu_per_ack_us), null],
  ["broadcast: CPU/delivery (us)", (s) => f(s.broadcast_cpu?.cpu_per_delivered_us, 2), ratios.broadcast_cpu_node_over_ours],
  ["broadcast: p50 / p99 (ms)", (s) => `${f(s.broadcast_p99?.latency_p50_ms, 2)} / ${f(s.broadcast_p99?.latency_p99_ms, 2)}`, null],
  ["chat: messages/s closed loop", (s) => f(s.chat_max?.messages_per_sec, 0), ratios.chat_throughput_ours_over_node],
  ["chat: CPU per message (us)", (s) => f(s.chat_max?.cpu_per_message_us, 1), ratios.chat_cpu_per_message_node_over_ours],
  ["chat: Redis CPU/message (us)", (s) => f(s.chat_max?.redis_cpu_per_message_us, 1), null],
  ["chat: ack p50 / p99 (ms)", (s) => `${f(s.chat_rate?.ack_p50_ms, 2)} / ${f(s.chat_rate?.ack_p99_ms, 2)}`, null],
  ["chat: delivery p50 / p99 (ms)", (s) => `${f(s.chat_rate?.delivery_p50_ms, 2)} / ${f(s.chat_rate?.delivery_p99_ms, 2)}`, null],
  ["allocs per chat:message", (s) => f(s.allocs_chat?.allocs_per_message, 1), null],
  ["allocs per bench:echo", (s) => f(s.allocs_echo?.allocs_per_ack, 1), null],
  ["fanout: delivered msgs/s", (s) => (s.fanout ? `${f(s.fanout.delivered_per_sec, 0)} (${f(100 * (s.fanout.delivered_ratio ?? 0), 2)}%)` : "-"), null],
  ["fanout: latency p50 / p99 (ms)", (s) => (s.fanout ? `${f(s.fanout.latency_p50_ms, 2)} / ${f(s.fanout.latency_p99_ms, 2)}` : "-"), null],
  ["fanout: CPU/delivery (us)", (s) => f(s.fanout?.cpu_per_delivered_us, 2), null],
  ["fanout: Redis CPU/deliv. (us)", (s) => f(s.fanout?.redis_cpu_per_delivered_us, 3), null],
  ["fanout 3-shard: delivered/s", (s) => (s.fanout_cluster ? `${f(s.fanout_cluster.delivered_per_sec, 0)} (${f(100 * (s.fanout_cluster.delivered_ratio ?? 0), 2)}%)` : "-"), null],
  ["fanout 3-shard: p50 / p99 (ms)", (s) => (s.fanout_cluster ? `${f(s.fanout_cluster.latency_p50_ms, 2)} / ${f(s.fanout_cluster.latency_p99_ms, 2)}` : "-"), null],
  ["fanout 3-shard: CPU/deliv. (us)", (s) => f(s.fanout_cluster?.cpu_per_delivered_us, 2), null],
  ["fanout 3-shard: Redis CPU/dl", (s) => f(s.fanout_cluster?.redis_cpu_per_delivered_us, 3), null],
  ["recovery on/off: connect (s)", (s) => (s.recovery ? `${f(s.recovery.on?.idle?.connect_seconds, 2)} / ${f(s.recovery.off?.idle?.connect_seconds, 2)}` : "-"), null],
  ["recovery on/off: CPU/conn (us)", (s) => (s.recovery ? `${f(s.recovery.on?.idle?.cpu_per_conn_us)} / ${f(s.recovery.off?.idle?.cpu_per_conn_us)}` : "-"), null],
  ["recovery: session writes/join", (s) => f(s.recovery?.on?.redis?.join?.session_writes, 2), null],
  ["recovery: session writes/leave", (s) => f(s.recovery?.on?.redis?.leave?.session_writes, 2), null],
  ["recovery on/off: cmds/join", (s) => (s.recovery ? `${f(s.recovery.on?.redis?.join?.redis_commands, 2)} / ${f(s.recovery.off?.redis?.join?.redis_commands, 2)}` : "-"), null],
  ["recovery on/off: cmds/connect", (s) => (s.recovery ? `${f(s.recovery.on?.redis?.connect?.redis_commands, 2)} / ${f(s.recovery.off?.redis?.connect?.redis_commands, 2)}` : "-"), null],
  ["ratelimit: Redis cmds/1000 events", (s) => f(s.ratelimit?.far?.redis_commands_per_1000_events, 2), null],
  ["ratelimit: at limit p50/p99 (us)", (s) => (s.ratelimit ? `${f(s.ratelimit.at_limit?.last_quarter?.p50_us, 0)} / ${f(s.ratelimit.at_limit?.last_quarter?.p99_us, 0)}` : "-"), null],
];
const pad = (t, n) => String(t).padEnd(n);
console.log(`\n${pad("", 34)}${pad("depth-realtime", 18)}${pad("node", 18)}ratio (>1: ours better)`);
for (const [label, get, r] of rows) {
  const a = get(ours), b = get(node);
  if ([a, b].every((x) => x === "-" || x === "- / -" || x === "-/-")) continue;  // not run
  console.log(`${pad(label, 34)}${pad(a, 18)}${pad(b, 18)}${r ?? ""}`);
}

const show = (v) => (v === null || v === undefined ? "-" : String(v));
console.log(`\nIssue 12 targets\n${pad("measure", 70)}${pad("target", 36)}${pad("depth-realtime", 44)}${pad("node", 40)}met`);
for (const r of summary) {
  console.log(`${pad(r.measure, 70)}${pad(r.target, 36)}${pad(show(r.depth_realtime), 44)}${pad(show(r.node), 40)}${r.met === null ? "-" : r.met ? "yes" : "no"}`);
}
for (const [name, s] of Object.entries(servers)) if (s.status !== "ok" && s.status !== "not run") console.log(`${name}: ${s.status}`);
for (const w of warnings) console.log(`warning: ${w}`);
console.log(`\nresults: ${process.argv[2]} (and bench-results/latest.json)`);
