// Engine.IO v4 sessions over long-polling and WebSocket, with the upgrade,
// heartbeats, and the exact HTTP answers the official clients expect.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/metrics.h"
#include "core/timers.h"
#include "eio/eio_packet.h"
#include "http/connection.h"

namespace dr::eio {

// One Engine.IO packet, encoded once and shared by every recipient.
struct OutPacket {
  bool binary = false;
  std::string data;  // text: the whole packet ("42[...]"); binary: the raw bytes
  // Its WebSocket frame, written into the connection's output.
  void write_frame(http::Connection& c) const;
  void write_deflated_frame(http::Connection& c, int level) const;  // deflated on first use
  void polling_record(std::string& out) const;

 private:
  ws::Opcode opcode() const { return binary ? ws::Opcode::Binary : ws::Opcode::Text; }
  mutable std::unique_ptr<const std::string> deflated_;
};
using OutRef = std::shared_ptr<const OutPacket>;
OutRef make_text(PacketType type, std::string_view data);
OutRef make_binary(std::string bytes);

enum class Transport : uint8_t { Polling, WebSocket };

class Session;

// The layer above (Socket.IO), one per session.
class SessionHandler {
 public:
  virtual ~SessionHandler() = default;
  virtual void on_message(bool binary, std::string_view data) = 0;
  virtual void on_close(std::string_view reason) = 0;
  virtual void on_upgrade() {}  // the session moved to WebSocket
};

class Server;
class SessionTable;

class Session {
 public:
  Session(Server& server, std::string_view sid, Transport t, Handshake hs);
  ~Session();

  std::string_view sid() const { return {sid_, sid_len_}; }
  Transport transport() const { return transport_; }
  // The session's own, for its life (sockets read it through the session).
  const Handshake* handshake() const { return &handshake_; }

  // Queues a packet; a volatile one is dropped unless it can leave now.
  // Returns false when dropped.
  bool send(const OutRef& p, bool is_volatile = false);
  void close(std::string_view reason);
  bool closed() const { return closed_; }
  // Ends the session at the next flush, its queue dropped (a client past its
  // bound). Never at once: the caller may be walking sockets or rooms.
  void post_abort();

  std::unique_ptr<SessionHandler> handler;
  // Socket.IO: the session closes unless a namespace joins within connect_timeout.
  void cancel_connect_timeout() {
    connect_deadline_ = 0;
    schedule();
  }

 private:
  friend class Server;
  friend class SessionTable;
  void on_packet(const Packet& p);
  void on_message(bool binary, std::string_view data);
  void answer_get();  // completes the held GET with everything queued
  void queue_close();
  void finish_if_closed();  // the close packet has left: forget the session
  // Ends the session at once, queue dropped: a request for it then gets 400.
  void abort(std::string_view reason);
  void detach(http::Connection& c);
  // One timer per session, armed for the earliest of its deadlines below.
  void schedule();
  void on_timer();
  metrics::Entry* gauge() const;  // sessions of this transport

  // What only a long-polling session needs: made with it, freed once it has
  // moved to WebSocket (a session opened on WebSocket never has one).
  struct Polling {
    http::Connection* held_get = nullptr;  // a long-polling GET waiting for data
    http::Connection* probe = nullptr;     // a WebSocket being upgraded to
    std::vector<OutRef> queue;             // waits for a GET
    size_t queued_bytes = 0;               // of queue, bounded by max_output_buffer
    std::vector<std::pair<std::string, std::string>> get_headers;  // CORS of the held GET
    std::string get_encoding;              // "gzip"/"deflate" when the held GET accepts it
    int64_t upgrade_deadline = 0;
    int64_t next_noop = 0;
    int64_t close_deadline = 0;  // closed, waiting for a GET to deliver the rest
    bool probed = false;
  };
  http::Connection* held_get() const { return poll_ ? poll_->held_get : nullptr; }
  http::Connection* probe() const { return poll_ ? poll_->probe : nullptr; }
  bool queue_empty() const { return !poll_ || poll_->queue.empty(); }
  void clear_queue();

  Server& server_;
  Handshake handshake_;
  http::Connection* ws_ = nullptr;  // the WebSocket, once on it
  std::unique_ptr<Polling> poll_;
  uint64_t ping_interval_ = 0;
  uint64_t ping_timeout_ = 0;
  // The next ping, or while a pong is awaited (awaiting_pong_) its deadline.
  int64_t heartbeat_ = 0;
  int64_t connect_deadline_ = 0;
  Timer timer_;
  static constexpr size_t kMaxSid = 20;  // what make_sid makes
  char sid_[kMaxSid];
  uint8_t sid_len_ = 0;
  Transport transport_;
  bool overflowed_ = false;    // past the bound: aborted at the next flush
  bool poll_pending_ = false;  // queued on the server's flush list
  bool b64_ = false;           // binary as "b<base64>" text, asked for with b64=1
  bool close_queued_ = false;
  bool closed_ = false;
  bool awaiting_pong_ = false;
  std::unique_ptr<Session> next_in_bucket_;  // SessionTable's chain
};

// Sessions by sid: a hash table whose chains run through the sessions
// themselves (each owns the next of its bucket), so a session costs its
// table 8 B and a bucket slot, where a node map took a 40 B node and a bucket.
class SessionTable {
 public:
  Session* find(std::string_view sid) const;
  void insert(std::unique_ptr<Session> s);
  std::unique_ptr<Session> take(const Session& s);  // null if it is not in the table
  size_t size() const { return size_; }
  template <class F>
  void for_each(F&& f) const {  // f(Session&); f must not insert or take
    for (auto& head : buckets_)
      for (Session* s = head.get(); s; s = s->next_in_bucket_.get()) f(*s);
  }

 private:
  std::unique_ptr<Session>& bucket(std::string_view sid) {
    return buckets_[std::hash<std::string_view>{}(sid) & (buckets_.size() - 1)];
  }
  std::vector<std::unique_ptr<Session>> buckets_;  // a power of two of them, or none
  size_t size_ = 0;
};

class Server {
 public:
  using HandlerFactory = std::function<std::unique_ptr<SessionHandler>(Session&)>;

  Server(const CoreConf& conf, int slot, int workers, Timers& timers, HandlerFactory factory);
  ~Server();

  bool matches(std::string_view path) const;
  // The worker owning the session named in `url`, or -1 if it is this one.
  int owner_slot(std::string_view url) const;
  void handle_request(http::Connection& c, http::Request& req);
  void on_ws_message(http::Connection& c, bool binary, std::string_view data);
  void on_connection_closed(http::Connection& c);

  // Answers GETs that got data this loop turn, and ends the sessions that
  // overflowed: once, just before polling.
  void flush();
  bool flush_pending() const { return !poll_flush_.empty() || !aborts_.empty(); }
  // CORS headers for a request (empty when the origin is not allowed).
  std::vector<std::pair<std::string, std::string>> cors_headers(const http::Request& req) const;

  size_t session_count() const { return sessions_.size(); }
  const CoreConf& conf() const { return *conf_; }
  // A reload applied in place: new sessions and requests see the new values.
  void set_conf(const CoreConf& conf) { conf_ = &conf; }
  void close_all(std::string_view reason);
  // Closes at most `n` open sessions; returns how many stay open.
  size_t close_some(std::string_view reason, size_t n);
  size_t close_polling(std::string_view reason);

 private:
  friend class Session;
  void handshake(http::Connection& c, http::Request& req, Transport t);
  void accept_websocket(http::Connection& c, const http::Request& req);
  bool valid_websocket_request(const http::Request& req) const;
  void error(http::Connection& c, const http::Request& req, int code);
  void remove(Session& s);
  std::string new_sid();
  std::string open_packet(Transport t, const std::string& sid) const;  // "0{...}", the type included

  const CoreConf* conf_;
  int slot_;
  int workers_;
  Timers& timers_;
  HandlerFactory factory_;
  SessionTable sessions_;
  std::vector<Session*> poll_flush_;
  std::vector<Session*> aborts_;  // posted by send(): ending a session inside a send could end
                                  // sockets a caller is walking
  std::vector<std::unique_ptr<Session>> graveyard_;
  uint32_t counter_ = 0;
};

}  // namespace dr::eio
