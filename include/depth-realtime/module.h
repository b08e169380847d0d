// depth-realtime module API.
//
// This header (with json.h beside it) is all a module may include. A module is a
// plain descriptor (dr::Module) holding its name, its directive table and its
// lifecycle hooks; in init_worker it registers what it takes part in: CONNECT
// hooks (auth), per-event middleware (validation, rate limits), event handlers
// per namespace, disconnect handlers and HTTP routes.
//
// Everything runs on the worker's single libuv loop: no locking, and a handler
// must never block. Work that waits (Redis, timers) keeps a weak reference to
// the socket and answers later.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "depth-realtime/export.h"
#include "depth-realtime/json.h"

namespace dr {

// Bumped whenever a type below changes layout. A module built against another
// ABI, or with any build setting that changes the C++ layout of what it shares
// with the daemon, is refused at load time: the daemon compares the module's
// DR_MODULE_SIGNATURE with its own, item by item, and names the first that
// differs. Items are "NAME=value", separated by spaces (nginx stamps its
// NGX_MODULE_SIGNATURE the same way).
#define DR_MODULE_ABI 12
inline constexpr uint32_t kModuleAbi = DR_MODULE_ABI;
#define DR_STR1(x) #x
#define DR_STR2(x) DR_STR1(x)
// The C++ standard library: which one and which release (their std::string,
// std::function, ... differ), the std::string/std::list ABI, the debug mode
// (_GLIBCXX_DEBUG changes every container's layout).
#if defined(_GLIBCXX_RELEASE)
#define DR_SIG_STDLIB " libstdc++=" DR_STR2(_GLIBCXX_RELEASE) " _GLIBCXX_USE_CXX11_ABI=" DR_STR2(_GLIBCXX_USE_CXX11_ABI)
#elif defined(_LIBCPP_VERSION)
#define DR_SIG_STDLIB " libc++=" DR_STR2(_LIBCPP_ABI_VERSION)
#else
#define DR_SIG_STDLIB " stdlib=other"
#endif
#if defined(_GLIBCXX_DEBUG)
#define DR_SIG_DEBUG " _GLIBCXX_DEBUG=1"
#else
#define DR_SIG_DEBUG " _GLIBCXX_DEBUG=0"
#endif
// AddressSanitizer: an instrumented and a plain object disagree on the
// container annotations (and the runtime must be loaded first).
#if defined(__SANITIZE_ADDRESS__)
#define DR_SIG_ASAN " asan=1"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DR_SIG_ASAN " asan=1"
#endif
#endif
#ifndef DR_SIG_ASAN
#define DR_SIG_ASAN " asan=0"
#endif
// The sizes of the types the API's structs hold, and the 64-bit time_t/off_t
// switches of glibc on 32-bit targets.
#if defined(_TIME_BITS)
#define DR_SIG_TIME " _TIME_BITS=" DR_STR2(_TIME_BITS)
#else
#define DR_SIG_TIME " _TIME_BITS=default"
#endif
#if defined(_FILE_OFFSET_BITS)
#define DR_SIG_OFFSET " _FILE_OFFSET_BITS=" DR_STR2(_FILE_OFFSET_BITS)
#else
#define DR_SIG_OFFSET " _FILE_OFFSET_BITS=default"
#endif
#define DR_MODULE_SIGNATURE                                                        \
  "dr-abi=" DR_STR2(DR_MODULE_ABI)                                                 \
  DR_SIG_STDLIB DR_SIG_DEBUG DR_SIG_ASAN                                           \
  " __cplusplus=" DR_STR2(__cplusplus)                                             \
  " pointer=" DR_STR2(__SIZEOF_POINTER__) " long=" DR_STR2(__SIZEOF_LONG__)        \
  " long_double=" DR_STR2(__SIZEOF_LONG_DOUBLE__) DR_SIG_TIME DR_SIG_OFFSET

// ---------------------------------------------------------------- logging

enum class LogLevel { Debug = 0, Info, Notice, Warn, Error, Crit };

// Writes to the error log of the current process ("[level] pid#slot: text").
DR_API void log(LogLevel level, std::string_view text);
DR_API void logf(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// --------------------------------------------------------------- payloads

// Arguments of an event or an ack: a JSON array. Binary values appear in it
// as {"_placeholder":true,"num":N} standing for attachments[N], exactly as on
// the Socket.IO wire, so binary passes through a module untouched.
struct DR_API Payload {
  Json args;                             // a JSON array, never null
  std::vector<std::string> attachments;  // binary values, in placeholder order
  // The JSON text of `args` when the sender has it already (exactly what
  // encoding them gives; they are then not changed): a broadcast and an ack
  // build their packets around it instead of encoding the args again, so a
  // message sent under several names, or broadcast and acked, is encoded
  // once. Shared, not copied. Where it cannot serve (msgpack, batching) the
  // args are encoded as without it. copy() leaves it out.
  std::shared_ptr<const std::string> text;

  Payload() : args(json_array()) {}
  explicit Payload(Json array, std::vector<std::string> bin = {})
      : args(std::move(array)), attachments(std::move(bin)) {}
  // One argument (the common case: `{data: ...}` acks, object events).
  static Payload of(Json value) {
    Payload p;
    json_array_append_new(p.args.get(), value.release());
    return p;
  }
  Payload copy() const { return Payload(Json(json_deep_copy(args.get())), attachments); }
};

// --------------------------------------------------------- configuration

// Where a directive may appear.
enum ConfContext : unsigned {
  kConfMain = 1,       // top level
  kConfServer = 2,     // inside `server { }`
  kConfNamespace = 4,  // inside `namespace /name { }`
};

struct ModuleConf;

// Parses `args` (already split, variables substituted) into the module's conf.
// Returns false and sets `err` ("expected ..."); the caller adds file:line.
using DirectiveSetter = bool (*)(ModuleConf* conf, const std::vector<std::string>& args,
                                 std::string& err);

struct DR_API Directive {
  const char* name;         // nullptr ends a table
  unsigned contexts;        // ConfContext bits
  int min_args, max_args;   // argument count, max -1 = unbounded
  DirectiveSetter set;      // a generic setter below, or the module's own
  const char* default_text; // for the directive reference
  bool reload_in_place;     // a SIGHUP applies it without new workers
  const char* help;         // one line for the directive reference
};

// A module's configuration. One instance holds the main and server level
// directives; every `namespace` block gets a clone() of it that its own
// directives then override (explicit scoping: no hidden inheritance).
struct DR_API ModuleConf {
  virtual ~ModuleConf() = default;
  virtual std::unique_ptr<ModuleConf> clone() const = 0;
};
template <class T>
struct ModuleConfBase : ModuleConf {
  std::unique_ptr<ModuleConf> clone() const override {
    return std::make_unique<T>(static_cast<const T&>(*this));
  }
};

// Value parsers shared by every directive (exported by the daemon).
DR_API bool conf_parse_flag(const std::vector<std::string>& args, bool& out, std::string& err);          // on | off
DR_API bool conf_parse_size(const std::vector<std::string>& args, uint64_t& out, std::string& err);      // 512, 64k, 1m, 1g
DR_API bool conf_parse_msec(const std::vector<std::string>& args, uint64_t& out, std::string& err);      // 500ms, 25s, 2m, 1h; plain = ms
DR_API bool conf_parse_uint(const std::vector<std::string>& args, uint64_t& out, std::string& err);

namespace detail {
template <class T> struct MemberOf;
template <class C, class V> struct MemberOf<V C::*> { using Class = C; using Value = V; };
}  // namespace detail

// The struct a pointer to member belongs to (MemberClass<&AuthConf::enabled> is
// AuthConf): for setters of a module's own, written like the generic ones.
template <auto Field>
using MemberClass = typename detail::MemberOf<decltype(Field)>::Class;

// Generic setters, nginx style, writing into one field of the conf struct:
//   {"auth_jwt", kConfServer | kConfNamespace, 1, 1, dr::set_flag<&AuthConf::enabled>, ...}
template <auto Field>
bool set_flag(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  using C = typename detail::MemberOf<decltype(Field)>::Class;
  return conf_parse_flag(a, static_cast<C*>(c)->*Field, err);
}
template <auto Field>
bool set_size(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  using C = typename detail::MemberOf<decltype(Field)>::Class;
  return conf_parse_size(a, static_cast<C*>(c)->*Field, err);
}
template <auto Field>
bool set_msec(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  using C = typename detail::MemberOf<decltype(Field)>::Class;
  return conf_parse_msec(a, static_cast<C*>(c)->*Field, err);
}
template <auto Field>
bool set_uint(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  using C = typename detail::MemberOf<decltype(Field)>::Class;
  return conf_parse_uint(a, static_cast<C*>(c)->*Field, err);
}
// std::string: the single argument.
template <auto Field>
bool set_str(ModuleConf* c, const std::vector<std::string>& a, std::string&) {
  using C = typename detail::MemberOf<decltype(Field)>::Class;
  static_cast<C*>(c)->*Field = a.at(0);
  return true;
}
// std::vector<std::string>: every argument; a repeated directive replaces the list.
template <auto Field>
bool set_str_list(ModuleConf* c, const std::vector<std::string>& a, std::string&) {
  using C = typename detail::MemberOf<decltype(Field)>::Class;
  static_cast<C*>(c)->*Field = a;
  return true;
}

// ------------------------------------------------------------- handshake

// The Engine.IO handshake request, kept as one text (an idle connection holds
// it for its life) and parsed when asked.
struct DR_API Handshake {
  using Pairs = std::vector<std::pair<std::string_view, std::string_view>>;

  std::string address;  // peer IP
  bool secure = false;
  int64_t issued_ms = 0;  // ms since the epoch

  std::string_view url() const;  // request URL of the Engine.IO handshake
  // The first header of that name (names are lower-case), or the first query
  // parameter (decoded).
  std::optional<std::string_view> header(std::string_view name) const;
  std::optional<std::string_view> query_param(std::string_view name) const;
  // Every header / query parameter, in the request's order (repeats too).
  Pairs headers() const;
  Pairs query() const;

  // Building one (the engine, tests).
  void set_url(std::string_view url);
  void add_header(std::string_view name, std::string_view value);  // name lower-case
  void add_query(std::string_view name, std::string_view value);
  void shrink() { text_.shrink_to_fit(); }

 private:
  // Entries one after the other: a kind byte ('u', 'h', 'q'), then the name
  // and the value, each after its length (LEB128).
  void add(char kind, std::string_view name, std::string_view value);
  std::optional<std::string_view> find(char kind, std::string_view name) const;
  Pairs all(char kind) const;
  std::string text_;
};

// ------------------------------------------------------ dates, handshakes

// Milliseconds since the epoch in ISO 8601, UTC, with milliseconds
// ("2024-05-01T12:31:30.123Z"): JavaScript's Date.prototype.toISOString().
DR_API std::string iso_time(int64_t ms);
// The same instant as JavaScript's Date.prototype.toString() in UTC, to the
// second ("Wed May 01 2024 12:31:30 GMT+0000 (Coordinated Universal Time)"):
// Socket.IO's handshake.time.
DR_API std::string js_date(int64_t ms);
// A handshake as Socket.IO shows it (fetchSockets, the admin UI): headers,
// time, address, xdomain, secure, issued, url, query. Without `auth` (it may
// hold tokens): a caller that may show it adds it.
DR_API Json handshake_json(const Handshake& h);

// ----------------------------------------------------------------- sockets

// Result of an acknowledgement requested by the server: `timed_out` true and
// an empty payload when the client did not answer in time or went away.
using AckCallback = std::function<void(bool timed_out, Payload reply)>;

struct Event;

// A module's typed state on each socket (Socket::context): found by index,
// not by a string key, and kept parsed (what set()/get() hold is text).
// Ask for the slot once, in init_worker: socket_slot<MyState>("mymodule.state").
// The same name gives every module of the process the same slot, so a module
// can read the context another one fills (its type from a header both
// include, e.g. access_claims.h); asked for with another type, it is refused.
template <class T>
struct SocketSlot {
  uint32_t index = UINT32_MAX;  // UINT32_MAX: refused (the name holds another type)
  explicit operator bool() const { return index != UINT32_MAX; }
};
namespace detail {
DR_API uint32_t socket_slot(std::string_view name, const char* type);
}
template <class T>
SocketSlot<T> socket_slot(std::string_view name) {
  return SocketSlot<T>{detail::socket_slot(name, typeid(T).name())};
}

// One namespace connection of a client (a Socket.IO "socket").
class DR_API Socket {
 public:
  virtual ~Socket() = default;

  virtual const std::string& id() const = 0;    // public socket id
  virtual const std::string& nsp() const = 0;   // "/chat"
  virtual const Handshake& handshake() const = 0;
  virtual const json_t* auth() const = 0;       // CONNECT data, an object
  virtual bool connected() const = 0;

  // Per-socket data that hooks set and handlers read (e.g. "userId", "role").
  virtual void set(std::string_view key, std::string value) = 0;
  virtual const std::string* get(std::string_view key) const = 0;
  // Every key set so far, in order (what fetch_sockets reports as `data`).
  virtual const std::vector<std::pair<std::string, std::string>>& data() const = 0;

  // Server -> this client. `is_volatile`: dropped if it cannot leave now.
  virtual void emit(std::string_view event, Payload args, bool is_volatile = false) = 0;
  virtual void emit_with_ack(std::string_view event, Payload args, uint64_t timeout_ms,
                             AckCallback cb) = 0;
  // Answers the client's ack request `ack_id` (at most once per id). With
  // `reply.text` set, `reply.args` may be null: the server reads the args
  // from the text only where it needs them (msgpack, an answer within a
  // batch), so an ack whose text is known costs no JSON tree.
  virtual void ack(uint64_t ack_id, Payload reply) = 0;

  virtual void join(std::string_view room) = 0;
  virtual void leave(std::string_view room) = 0;
  virtual bool in_room(std::string_view room) const = 0;
  virtual std::vector<std::string> rooms() const = 0;

  // Server-side DISCONNECT for this namespace ("io server disconnect" on the
  // client); with close_connection, every namespace and the transport.
  virtual void disconnect(bool close_connection = false) = 0;

  // Handlers that answer later hold this, not a reference.
  virtual std::weak_ptr<Socket> weak() = 0;

  // Events of one socket are handled in arrival order (contract §8). A handler
  // that finishes later (after a Redis reply) keeps the returned token until it
  // has answered: the socket's next events wait, queued, until every copy of it
  // is gone. Not a lock: nothing else waits for it.
  virtual std::shared_ptr<void> delay_next_events() = 0;

  // A middleware that cannot decide yet (it waits for Redis) calls defer(ev)
  // and returns false: the event leaves the pipeline for now and the socket's
  // next events wait behind it. Call the returned function once, later (never
  // inside the middleware): true runs the event on from the next middleware,
  // false drops it (the middleware has told the client). Dropping it uncalled
  // drops the event; after the client went away it does nothing.
  using Resume = std::function<void(bool go_on)>;
  virtual Resume defer(Event& ev) = 0;

  // The client connection the socket belongs to: an id its namespace sockets
  // share (the first 12 characters of the Engine.IO session id, as the
  // Socket.IO admin UI shows it; not the session id itself, which would let
  // its holder act as the client), and its transport now: "polling" or
  // "websocket".
  virtual const std::string& client_id() const = 0;
  virtual std::string_view transport() const = 0;

  // The context in `slot`, made (default-constructed) on first use and
  // destroyed with the socket; find_context: null until made. A socket holds
  // nothing for the slots it does not use. A refused slot throws.
  template <class T>
  T& context(SocketSlot<T> slot) {
    std::shared_ptr<void>& v = context_slot(slot.index);
    if (!v) v = std::make_shared<T>();
    return *static_cast<T*>(v.get());
  }
  template <class T>
  const T* find_context(SocketSlot<T> slot) const {
    return static_cast<const T*>(context_value(slot.index));
  }

 protected:
  virtual std::shared_ptr<void>& context_slot(uint32_t index) = 0;
  virtual const void* context_value(uint32_t index) const = 0;
};

// An incoming event, after the Socket.IO layer has decoded it.
struct DR_API Event {
  std::string name;
  Payload args;                   // without the event name
  std::optional<uint64_t> ack_id; // set when the client waits for an ack
};

// ----------------------------------------------------------------- replies

// {data: X} to the client's ack, when it asked for one.
DR_API void ack_data(Socket& s, const Event& ev, Json data);
// The contract's error answer: {error:{code,message,details?}} to the ack when
// the client asked for one, else the `error` event with {code,message,details?}.
DR_API void send_error(Socket& s, const Event& ev, std::string_view code, std::string_view message,
                std::string_view details = {});
// The same with an error object the caller built ({code, message, ...} with
// fields of its own, such as retryAfterMs).
DR_API void send_error_object(Socket& s, const Event& ev, Json error);
// A copy of `value` holding only the binary attachments (of `in`) it refers
// to, appended to `out`, its placeholders renumbered to match.
DR_API Json copy_with_binary(const json_t* value, const std::vector<std::string>& in, std::vector<std::string>& out);
// A one-argument payload made of part of an event (e.g. its `data` field).
DR_API Payload payload_of(const json_t* value, const std::vector<std::string>& attachments);

// ------------------------------------------------------------------- hooks

struct DR_API ConnectError {
  std::string message;
  Json data;  // may be null: then CONNECT_ERROR carries no "data"
};
// Continue (nullopt) or refuse the CONNECT. Safe to call late, or after the
// client went away (then it does nothing); only the first call counts.
using ConnectNext = std::function<void(std::optional<ConnectError>)>;
using ConnectHook = std::function<void(Socket& socket, ConnectNext next)>;
// CONNECT hooks run by phase, then in registration order within a phase,
// whatever order the modules were loaded in.
enum class ConnectPhase {
  Identify,  // who the client is (auth_jwt): sets the user the later phases read
  Limit,     // how many may connect (ratelimit), by user or IP
  Access,    // may this user have this namespace
  App,       // the application's own
};

// Runs before handlers, by phase, then in registration order. Return false to
// drop the event (the middleware has told the client why, if it should know).
using EventMiddleware = std::function<bool(Socket& socket, Event& event)>;
enum class EventPhase {
  Limit,     // first, on every event, valid or not (rate limits)
  Identity,  // then whose it is (auth_jwt: a token past exp, auth:refresh)
  Check,     // then validation and the like
};
using EventHandler = std::function<void(Socket& socket, Event& event)>;
using ConnectionHandler = std::function<void(Socket& socket)>;
using DisconnectHandler = std::function<void(Socket& socket, std::string_view reason)>;
// A local socket joined (`joined` true) or left a named room; a socket's own
// room (its id) is not reported. On disconnect it leaves every room first.
using RoomHandler = std::function<void(Socket& socket, std::string_view room, bool joined)>;
// An event the server sent to a local socket (its own emit, or its share of a
// broadcast), after it was handed to the transport: `sent` is [event, ...args]
// (with the recovery offset last when one was appended). Called after the
// delivery loop, never inside it.
using SentHandler = std::function<void(Socket& socket, const Payload& sent)>;

// May `socket` be in `room`? Asked when connection state recovery would give a
// socket its rooms back (its identity already confirmed by the CONNECT hooks):
// answer through `done`, at once or later; only the first call counts, and a
// call after the client went away does nothing. A room a guard does not know
// is not its to refuse (answer true); a room any guard refuses is not rejoined.
using RoomVerdict = std::function<void(bool allowed)>;
using RoomGuard = std::function<void(Socket& socket, const std::string& room, RoomVerdict done)>;

// ---------------------------------------------------------------- broadcast

struct DR_API BroadcastOptions {
  std::string nsp = "/";
  std::vector<std::string> rooms;   // empty: the whole namespace
  std::vector<std::string> except;  // minus the members of these rooms
  bool is_volatile = false;
  bool local = false;               // this worker only
};

// -------------------------------------------------------------------- HTTP

struct DR_API HttpRequest {
  std::string method;  // "GET"
  std::string path;    // without the query
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string body;
  std::string address;

  const std::string* header(std::string_view name) const;
  const std::string* query_param(std::string_view name) const;
};

struct DR_API HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

using HttpRespond = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(const HttpRequest& req, HttpRespond respond)>;

// ----------------------------------------------------------------- metrics

enum class MetricType { Counter, Gauge };

// One series of a metric as the shared table holds it: gauges have one share
// per process (pid), counters one series per label (pid 0).
struct DR_API MetricSample {
  std::string label;
  int pid;
  int64_t value;
};

// ------------------------------------------------------------------ timers

// A deadline on the worker's one timer facility (a heap on one uv_timer: an
// armed timeout costs nothing until it is due). The callback runs from the
// loop, once per arm, never inside arm_in(); re-arm it there to repeat.
// Destroying the Timeout cancels it, from its own callback too.
class DR_API Timeout {
 public:
  virtual ~Timeout() = default;
  virtual void arm_in(uint64_t ms) = 0;  // an armed timeout moves
  virtual void cancel() = 0;
  virtual bool armed() const = 0;
};

// Which listener a route is served on.
enum class Listener { Main, Metrics };

// ------------------------------------------------------------------ worker

struct Module;

// What a worker offers its modules. One per worker process.
class DR_API Worker {
 public:
  virtual ~Worker() = default;

  virtual uv_loop_t* loop() = 0;
  virtual int slot() const = 0;  // worker number, 0..worker_processes-1

  // The timer facility's clock: monotonic milliseconds (the loop's time;
  // tests drive their own). Deadlines are measured on it, not on the wall clock.
  virtual int64_t now_ms() const = 0;
  // A timeout that runs `fn`; not armed until arm_in().
  virtual std::unique_ptr<Timeout> timeout(std::function<void()> fn) = 0;
  // The same for a caller that keeps its state itself: `fn(arg)` when due.
  // One allocation and no std::function, where a lambda capturing more than
  // two pointers costs a second allocation (one per timer: per connection,
  // for a module that times each one).
  virtual std::unique_ptr<Timeout> timeout_fn(void (*fn)(void* arg), void* arg) {
    return timeout([fn, arg] { fn(arg); });
  }
  // Runs `fn` from the loop once the current event is handled (a callback
  // that must not run inside the call that asked for it).
  virtual void post(std::function<void()> fn) = 0;

  // The module's configuration: server level, or as merged for namespace `nsp`.
  virtual const ModuleConf* conf(const Module& m, std::string_view nsp = {}) const = 0;
  // Namespaces the configuration declares ("/", "/chat", ...).
  virtual std::vector<std::string> namespaces() const = 0;

  // `nsp` empty = every namespace.
  virtual void use_connect(std::string_view nsp, ConnectHook hook, ConnectPhase phase) = 0;
  virtual void use_event(std::string_view nsp, EventMiddleware mw, EventPhase phase = EventPhase::Check) = 0;
  virtual void on_connection(std::string_view nsp, ConnectionHandler h) = 0;
  virtual void on(std::string_view nsp, std::string_view event, EventHandler h) = 0;
  virtual void on_disconnect(std::string_view nsp, DisconnectHandler h) = 0;
  // Room membership changes of connected sockets (see RoomHandler).
  virtual void on_room(std::string_view nsp, RoomHandler h) = 0;
  // The socket's connection changed transport (upgraded to WebSocket).
  virtual void on_transport(std::string_view nsp, ConnectionHandler h) = 0;
  // Access to the rooms a recovered session restores (see RoomGuard).
  virtual void on_room_check(std::string_view nsp, RoomGuard guard) = 0;
  // Events sent to local sockets (see SentHandler); costs nothing while none is registered.
  virtual void on_event_sent(std::string_view nsp, SentHandler h) = 0;

  // Through the adapter: reaches every worker (and, with Redis, every node).
  virtual void broadcast(const BroadcastOptions& opts, std::string_view event, Payload args) = 0;
  // Sockets of this worker in a namespace, optionally only those in `room`.
  virtual std::vector<std::weak_ptr<Socket>> local_sockets(std::string_view nsp,
                                                           std::string_view room = {}) = 0;

  virtual void route(Listener where, std::string_view method, std::string_view path,
                     HttpHandler h) = 0;

  // Metrics summed over every worker and exposed on /metrics (Prometheus).
  // Declare once in init_worker; `label` is empty or name="value" (see
  // metric_label). The set of label values must stay small: the table is
  // fixed (2048 series) and further series are dropped.
  virtual void metric_declare(std::string_view name, MetricType type, std::string_view help) = 0;
  virtual void metric_add(std::string_view name, std::string_view label, int64_t delta = 1) = 0;
  // Every series of a metric, over all the processes of this node.
  virtual std::vector<MetricSample> metric_read(std::string_view name) const = 0;

  // A zone of shared memory a module declared in init_master, by name: the
  // same bytes in the master and every worker. Empty when none was declared.
  virtual std::span<std::byte> shared_zone(std::string_view name) = 0;
};

// A repeating timeout: `fn` every `ms`, the first time `first_ms` from now,
// until the returned Timeout goes.
inline std::unique_ptr<Timeout> every(Worker& w, uint64_t ms, std::function<void()> fn, uint64_t first_ms) {
  auto self = std::make_shared<Timeout*>(nullptr);
  auto t = w.timeout([self, ms, fn = std::move(fn)] {
    (*self)->arm_in(ms);  // first: `fn` may throw, or destroy the timeout
    fn();
  });
  *self = t.get();
  t->arm_in(first_ms);
  return t;
}
inline std::unique_ptr<Timeout> every(Worker& w, uint64_t ms, std::function<void()> fn) {
  return every(w, ms, std::move(fn), ms);
}

// name="value" with the value escaped for the Prometheus text format.
DR_API std::string metric_label(std::string_view name, std::string_view value);

// ------------------------------------------------------------------ master

// What the master offers its modules in init_master, before it forks the
// workers (and again on a reload, for the new configuration).
class DR_API MasterContext {
 public:
  virtual ~MasterContext() = default;

  // The module's configuration: server level, or as merged for namespace `nsp`.
  virtual const ModuleConf* conf(const Module& m, std::string_view nsp = {}) const = 0;
  virtual std::vector<std::string> namespaces() const = 0;

  // Declares a zone of `size` bytes shared by the master and every worker
  // (Worker::shared_zone finds it), zero-filled when made. A reload that
  // declares it again with the same size keeps it and its contents (old and
  // new workers share it); another size makes a new one. False + err: it
  // cannot be made (or its name is taken by another size in this conf).
  virtual bool shared_zone(std::string_view name, size_t size, std::string& err) = 0;
};

// --------------------------------------------------------------- the module

struct DR_API Module {
  uint32_t abi;               // kModuleAbi
  const char* signature;      // DR_MODULE_SIGNATURE
  const char* name;
  const Directive* directives;  // ends with {nullptr}, may be nullptr
  // The conf struct the directives write into, with its defaults set.
  std::unique_ptr<ModuleConf> (*create_conf)();
  // Checks a parsed conf in the master (`-t` runs it too): false + err fails the load.
  bool (*check_conf)(ModuleConf* conf, std::string& err);
  // In each worker, after its loop exists: register hooks. false stops the worker.
  bool (*init_worker)(Worker& w, const Module& self);
  void (*exit_worker)(Worker& w, const Module& self);
  // In the master, after the conf is checked and before the workers fork; on
  // a reload again, for the new conf (its workers start only if it returns
  // true). Declares shared zones. May be nullptr.
  bool (*init_master)(MasterContext& m, const Module& self, std::string& err) = nullptr;
};

}  // namespace dr

// A module compiled as a shared object exports its descriptor with this.
#define DR_MODULE_EXPORT(module_var) \
  extern "C" __attribute__((visibility("default"))) const dr::Module* dr_module_entry() { return &(module_var); }
