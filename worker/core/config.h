// The whole configuration of one cycle: core settings, the loaded modules with
// their confs, and the namespaces. Built completely (and checked) before it is
// used, so a reload that fails leaves the running cycle untouched.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/conf_parser.h"
#include "depth-realtime/module.h"

namespace dr {

struct ListenAddress {
  std::string host;  // "0.0.0.0", "127.0.0.1", "::"
  int port = 0;
  bool ssl = false;  // `listen 443 ssl;`
  // One half of `localhost:PORT` (127.0.0.1 or ::1): an address the machine
  // lacks (no IPv6) is skipped, as long as the other half is bound.
  bool localhost = false;
  std::string text() const;
};

// Settings of the core ("core" is itself a module, as in nginx).
struct CoreConf : ModuleConfBase<CoreConf> {
  // main
  int worker_processes = 0;  // 0 = auto (one per core)
  std::string error_log = "stderr";
  LogLevel log_level = LogLevel::Info;
  std::string pid_file;
  uint64_t worker_shutdown_timeout = 10000;
  uint64_t worker_shutdown_spread = 5000;  // clients are told to reconnect over this long
  uint64_t worker_heartbeat_timeout = 10000;  // a worker silent this long is killed and replaced; 0 = off
  std::string event_log = "off";  // JSON lines, one per client event
  double event_log_sample = 1.0;

  // server
  std::vector<ListenAddress> listen;
  std::vector<ListenAddress> metrics_listen;  // /metrics, /healthz, /readyz; empty: on `listen`
  std::string path = "/socket.io/";
  uint64_t ping_interval = 25000;
  uint64_t ping_timeout = 60000;
  uint64_t upgrade_timeout = 10000;
  uint64_t connect_timeout = 45000;
  uint64_t max_payload = 1000000;
  bool allow_polling = true;
  bool allow_websocket = true;
  std::vector<std::string> cors_origins;  // empty: no CORS headers
  bool cors_credentials = true;
  uint64_t client_header_timeout = 10000;
  uint64_t client_body_timeout = 10000;
  uint64_t keepalive_timeout = 75000;
  uint64_t client_max_header_size = 16 * 1024;
  uint64_t max_output_buffer = 4 * 1024 * 1024;  // a slower client is dropped
  bool client_batch = false;
  // The Socket.IO parser of every client: socket.io-parser's text (json) or
  // socket.io-msgpack-parser's. One for the server, as in Node: all the
  // namespaces of a client share one Engine.IO connection.
  enum class Parser : uint8_t { Json, Msgpack };
  Parser parser = Parser::Json;
  // Server batching: events (optionally only when a field of their data has a
  // value) coalesced per socket for clients that connect with auth.batch true.
  struct BatchRule {
    std::string event, field, value;
  };
  std::vector<BatchRule> server_batch_events;  // every server_batch_events' rules, the first match taking the event
  uint64_t server_batch_interval = 100;  // how long a socket's batch collects before it leaves
  bool websocket_compression = true;  // permessage-deflate when the client offers it
  bool http_compression = true;       // gzip/deflate of long-polling responses
  uint64_t compression_threshold = 1024;
  uint64_t compression_level = 6;
  std::string ssl_certificate;      // PEM chain, for listeners marked ssl
  std::string ssl_certificate_key;  // PEM key
  std::string ssl_ciphers;          // TLS 1.2 cipher list; empty: OpenSSL's defaults
  bool ssl_tls13_only = false;      // ssl_protocols TLSv1.3
  bool has_ssl() const;

  // Redis: the cluster adapter, shared membership and connection state
  // recovery (worker/cluster/). No host and no unix path: no Redis.
  struct Redis {
    std::string host;
    int port = 6379;
    std::string unix_path;
    std::string password;
    uint64_t db = 0;
    std::string key_prefix = "socket.io";  // adapter channels, as @socket.io/redis-adapter's `key`
    std::string app_prefix = "depth:";     // keys the daemon keeps (membership, recovery)
    uint64_t connect_timeout = 5000;
    uint64_t command_timeout = 5000;
    uint64_t requests_timeout = 5000;  // cluster requests (fetchSockets, serverSideEmit acks, ...)
    uint64_t node_ttl = 15000;         // a node silent this long is dead and its membership removed
    uint64_t max_pending = 16 * 1024 * 1024;  // bytes of commands waiting for Redis; more are dropped
    // Sentinel: the master `master_name` is asked of these sentinels; `host`
    // and `port` then hold the master last learnt (empty: none known yet).
    struct Endpoint {
      std::string host;
      int port = 26379;
    };
    std::vector<Endpoint> sentinels;
    std::string master_name;
    std::string sentinel_password;
    // Redis Cluster: the seed nodes asked for the slot map (redis_cluster.h).
    std::vector<Endpoint> cluster_nodes;
    // redis_wait_replicas N TIMEOUT: a stored message is acked once WAIT says
    // N replicas have it (0: off).
    uint64_t wait_replicas = 0;
    uint64_t wait_timeout = 0;
    bool sentinel() const { return !sentinels.empty(); }
    bool cluster() const { return !cluster_nodes.empty(); }
    bool configured() const { return !host.empty() || !unix_path.empty() || sentinel() || cluster(); }
    std::string text() const;  // for logs: "127.0.0.1:6379", "unix:/path", "master NAME at H:P"
  } redis;
  uint64_t recovery_window = 120000;  // connection state recovery (with Redis); 0 = off

  int workers() const;  // resolves auto
};

struct ModuleHandleDeleter {
  void operator()(void* h) const;
};

struct LoadedModule {
  const Module* module = nullptr;
  std::string path;
  std::unique_ptr<void, ModuleHandleDeleter> handle;  // dlopen handle
  std::unique_ptr<ModuleConf> conf;                   // main + server level
};

struct NamespaceConf {
  std::string name;
  std::vector<std::unique_ptr<ModuleConf>> module_confs;  // index = module index
};

struct Config {
  std::string file;
  // Every directive a reload cannot apply in place (listen, modules,
  // namespaces, ...), as text: equal fingerprints mean the running workers
  // can take the new configuration without being replaced.
  std::string restart_fingerprint;
  CoreConf core;
  std::vector<LoadedModule> modules;
  std::vector<NamespaceConf> namespaces;
  // Where each directive was last set ("file:line"), for checks made after parsing.
  std::map<std::string, std::string, std::less<>> set_at;

  // "file:line" of `directive`, or `fallback` (the main file) when it was not set.
  std::string where(std::string_view directive, const std::string& fallback) const;
  const NamespaceConf* find_namespace(std::string_view name) const;
  const ModuleConf* module_conf(const Module& m, std::string_view nsp) const;
};

struct LoadOptions {
  std::string module_dir;  // where relative load_module paths resolve
};

// Parses, loads modules, applies directives, runs the modules' check_conf.
// On failure returns null and `err` reads "file:line: message".
std::unique_ptr<Config> load_config(const std::string& path, const LoadOptions& opts, std::string& err);

// Every directive of the core and of the loaded modules, for `-T`/docs.
std::string directive_reference(const Config& cfg);

}  // namespace dr
