#include "eio/session.h"

#include <algorithm>
#include <strings.h>

#include <cstring>

#include "core/metrics.h"
#include "core/random_bytes.h"
#include "core/uv_util.h"
#include "http/compress.h"
#include "depth-realtime/json.h"
#include "eio/sid.h"

namespace dr::eio {

// ------------------------------------------------------------ out packets

void OutPacket::write_frame(http::Connection& c) const { c.send_frame(opcode(), data); }

void OutPacket::write_deflated_frame(http::Connection& c, int level) const {
  // Compressed once, for every recipient.
  if (!deflated_) deflated_ = std::make_unique<const std::string>(compress::deflate(data, level, compress::Format::Raw));
  c.send_frame(opcode(), *deflated_, true);
}

void OutPacket::polling_record(std::string& out) const {
  if (!binary) {
    out.append(data);
  } else {
    out.push_back('b');
    out.append(base64_encode(data));
  }
}

OutRef make_text(PacketType type, std::string_view data) {
  auto p = std::make_shared<OutPacket>();
  p->data.reserve(1 + data.size());
  p->data.push_back(char('0' + int(type)));
  p->data.append(data);
  return p;
}

OutRef make_binary(std::string bytes) {
  auto p = std::make_shared<OutPacket>();
  p->binary = true;
  p->data = std::move(bytes);
  return p;
}

namespace {

const std::vector<std::pair<std::string, std::string>> kNoStore = {{"Cache-Control", "no-store"}};

}  // namespace

// ----------------------------------------------------------------- session

Session::Session(Server& server, std::string_view sid, Transport t, Handshake hs)
    : server_(server),
      handshake_(std::move(hs)),
      timer_(server.timers_, [](void* s) { static_cast<Session*>(s)->on_timer(); }, this),
      transport_(t) {
  sid_len_ = uint8_t(std::min(sid.size(), kMaxSid));
  memcpy(sid_, sid.data(), sid_len_);
  if (t == Transport::Polling) poll_ = std::make_unique<Polling>();
  // The heartbeat the open packet announced holds for the session's life,
  // whatever a reload changes: the client timed its expectations on it.
  ping_interval_ = server_.conf_->ping_interval;
  auto b64 = handshake_.query_param("b64");
  b64_ = b64 && (*b64 == "1" || *b64 == "true");
  ping_timeout_ = server_.conf_->ping_timeout;
  int64_t now = server_.timers_.now();
  heartbeat_ = now + int64_t(ping_interval_);
  connect_deadline_ = now + int64_t(server_.conf_->connect_timeout);
  schedule();
  metrics::add(gauge(), 1);
  metrics::add(metrics::core().connected_clients, 1);
  metrics::add(metrics::core().sessions_opened);
}

Session::~Session() {
  metrics::add(gauge(), -1);
  metrics::add(metrics::core().connected_clients, -1);
}

metrics::Entry* Session::gauge() const {
  return transport_ == Transport::WebSocket ? metrics::core().sessions_websocket : metrics::core().sessions_polling;
}

bool Session::send(const OutRef& p, bool is_volatile) {
  if (closed_ || overflowed_) return false;
  if (transport_ == Transport::WebSocket && ws_) {
    if (is_volatile && !ws_->writable()) return false;
    auto& conf = *server_.conf_;
    if (p->binary && b64_) {  // a client that cannot take binary frames (b64=1)
      std::string text;
      p->polling_record(text);
      ws_->send_frame(ws::Opcode::Text, text);
      return true;
    }
    if (ws_->deflate() && p->data.size() >= conf.compression_threshold)
      p->write_deflated_frame(*ws_, int(conf.compression_level));
    else
      p->write_frame(*ws_);
    return true;
  }
  // A WebSocket session not (or no longer) on its connection: nowhere to go.
  if (!poll_) return false;
  if (is_volatile && !poll_->held_get) return false;
  poll_->queue.push_back(p);
  poll_->queued_bytes += p->data.size() + 1;
  if (poll_->queued_bytes > server_.conf_->max_output_buffer) {
    // A poller that never fetches cannot make the worker hold unbounded memory.
    logf(LogLevel::Info, "client %s: %zu bytes queued for long-polling, closing the session",
         handshake_.address.c_str(), poll_->queued_bytes);
    metrics::add(metrics::core().slow_closed_polling);
    post_abort();
    return false;
  }
  if (poll_->held_get && !poll_pending_) {
    poll_pending_ = true;
    server_.poll_flush_.push_back(this);
  }
  return true;
}

void Session::clear_queue() {
  if (!poll_) return;
  poll_->queue.clear();
  poll_->queued_bytes = 0;
}

void Session::answer_get() {
  poll_pending_ = false;
  if (!poll_ || !poll_->held_get || poll_->queue.empty()) return;
  Polling& pl = *poll_;
  std::string body;
  size_t total = 0;
  for (auto& p : pl.queue) total += p->data.size() + 1;
  body.reserve(total + total / 3);
  for (size_t i = 0; i < pl.queue.size(); i++) {
    if (i) body.push_back(kRecordSeparator);
    pl.queue[i]->polling_record(body);
  }
  clear_queue();
  http::Connection* c = pl.held_get;
  pl.held_get = nullptr;
  c->owner = nullptr;
  auto headers = pl.get_headers;
  headers.insert(headers.end(), kNoStore.begin(), kNoStore.end());
  if (!pl.get_encoding.empty() && body.size() >= server_.conf_->compression_threshold) {
    bool gzip = pl.get_encoding == "gzip";
    std::string z = compress::deflate(body, int(server_.conf_->compression_level),
                                      gzip ? compress::Format::Gzip : compress::Format::Zlib);
    if (!z.empty()) {
      body = std::move(z);
      headers.emplace_back("Content-Encoding", pl.get_encoding);
    }
  }
  c->respond(200, "text/plain; charset=UTF-8", body, headers);
  if (closed_ && !close_queued_) queue_close();  // for the next GET
}

// Closes for an error end a long-polling session at once, as Engine.IO does:
// its queue is dropped and the next request for it gets 400. Only a close by
// the server's choice (disconnect(), drain) or the client's delivers first.
static bool error_close(std::string_view reason) {
  return reason == "parse error" || reason == "transport error" || reason == "ping timeout";
}

void Session::close(std::string_view reason) {
  if (closed_) return;
  if (transport_ == Transport::Polling && error_close(reason)) {
    abort(reason);
    return;
  }
  closed_ = true;
  // Reasons are the server's own few strings, so the label set stays small.
  metrics::add(metrics::get("depth_realtime_engine_sessions_closed_total", metrics::label("reason", reason)));
  if (handler) handler->on_close(reason);  // may still queue DISCONNECT packets
  if (http::Connection* probe = this->probe()) {
    poll_->probe = nullptr;
    probe->owner = nullptr;
    probe->close_websocket();
  }
  if (transport_ == Transport::WebSocket) {
    // As Node: no Engine.IO close packet, the WebSocket closes (after what is queued).
    if (ws_) {
      ws_->owner = nullptr;
      ws_->close_websocket();
      ws_ = nullptr;
    }
    server_.remove(*this);
    return;
  }
  // Polling: what is queued leaves first and the close packet follows in the
  // next GET, as Node does; the client handles Socket.IO packets a tick late,
  // so a close in the same response would overtake them.
  if (poll_->queue.empty() && !close_queued_) queue_close();
  poll_->close_deadline = server_.timers_.now() + 10000;  // how long the client may take to fetch it
  schedule();
  if (poll_->held_get) answer_get();
  finish_if_closed();
}

void Session::post_abort() {
  if (closed_ || overflowed_) return;
  if (poll_) {
    std::vector<OutRef>().swap(poll_->queue);
    poll_->queued_bytes = 0;
  }
  overflowed_ = true;
  server_.aborts_.push_back(this);
}

void Session::abort(std::string_view reason) {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  metrics::add(metrics::get("depth_realtime_engine_sessions_closed_total", metrics::label("reason", reason)));
  if (handler) handler->on_close(reason);
  clear_queue();
  if (http::Connection* probe = this->probe()) {
    poll_->probe = nullptr;
    probe->owner = nullptr;
    probe->close_websocket();
  }
  if (ws_) {
    ws_->owner = nullptr;
    ws_->close_websocket();
    ws_ = nullptr;
  }
  if (http::Connection* c = held_get()) {  // told the session is over
    poll_->held_get = nullptr;
    c->owner = nullptr;
    std::string body;
    make_text(PacketType::Close, "")->polling_record(body);
    c->respond(200, "text/plain; charset=UTF-8", body, poll_->get_headers);
  }
  server_.remove(*this);
}

void Session::queue_close() {
  if (poll_) poll_->queue.push_back(make_text(PacketType::Close, ""));
  close_queued_ = true;
}

void Session::finish_if_closed() {
  if (closed_ && close_queued_ && queue_empty()) server_.remove(*this);
}

void Session::detach(http::Connection& c) {
  if (&c == probe()) {
    poll_->probe = nullptr;
    poll_->probed = false;
    poll_->upgrade_deadline = 0;
    schedule();
  }
  if (&c == held_get()) {
    poll_->held_get = nullptr;
    if (!closed_) close("transport close");  // poll connection closed prematurely
    else server_.remove(*this);
  }
  if (&c == ws_) {
    ws_ = nullptr;
    close("transport close");
  }
}

void Session::on_packet(const Packet& p) {
  if (closed_) return;
  switch (p.type) {
    case PacketType::Pong:
      awaiting_pong_ = false;
      heartbeat_ = server_.timers_.now() + int64_t(ping_interval_);
      schedule();
      return;
    case PacketType::Message:
      on_message(p.binary, p.data);
      return;
    case PacketType::Noop:
      return;  // harmless; Node's engine.io ignores it too
    case PacketType::Close:
      // The client is gone: nothing more to deliver, a held GET gets a noop.
      close_queued_ = true;
      clear_queue();
      if (held_get()) poll_->queue.push_back(make_text(PacketType::Noop, ""));
      close("transport close");
      return;
    default:
      // v4 clients never send pings, opens or noops on an established transport.
      close("parse error");
      return;
  }
}

void Session::on_message(bool binary, std::string_view data) {
  metrics::add(metrics::core().messages_received);
  if (handler) handler->on_message(binary, data);
}

// ------------------------------------------------------------------ server

Server::Server(const CoreConf& conf, int slot, int workers, Timers& timers, HandlerFactory factory)
    : conf_(&conf), slot_(slot), workers_(workers), timers_(timers), factory_(std::move(factory)) {}

Server::~Server() = default;

bool Server::matches(std::string_view path) const {
  std::string_view base = conf_->path;
  if (path.substr(0, base.size()) == base) return true;
  // "/socket.io" without the slash is the same endpoint.
  return path.size() + 1 == base.size() && base.substr(0, path.size()) == path;
}

int Server::owner_slot(std::string_view url) const {
  auto q = url.find('?');
  if (q == std::string_view::npos || !matches(url.substr(0, q))) return -1;
  std::string_view qs = url.substr(q);
  size_t pos = 0;
  while ((pos = qs.find("sid=", pos)) != std::string_view::npos) {
    if (qs[pos - 1] == '?' || qs[pos - 1] == '&') break;
    pos += 4;
  }
  if (pos == std::string_view::npos) return -1;
  int slot = sid_worker(qs.substr(pos + 4));
  return slot != slot_ ? slot : -1;  // (slot_ is this worker's id; ids outlive reloads)
}

std::string Server::new_sid() {
  uint8_t random[10];
  random_bytes(random, sizeof random);
  return make_sid(slot_, random, counter_++);
}

std::string Server::open_packet(Transport t, const std::string& sid) const {
  // Appended into one buffer: the handshake answer is built once per connection.
  std::string s;
  s.reserve(128 + sid.size());
  s.append("0{\"sid\":\"").append(sid).append("\",\"upgrades\":[");
  if (t == Transport::Polling && conf_->allow_websocket) s.append("\"websocket\"");
  s.append("],\"pingInterval\":").append(std::to_string(conf_->ping_interval));
  s.append(",\"pingTimeout\":").append(std::to_string(conf_->ping_timeout));
  s.append(",\"maxPayload\":").append(std::to_string(conf_->max_payload)).append("}");
  return s;
}

std::vector<std::pair<std::string, std::string>> Server::cors_headers(const http::Request& req) const {
  std::vector<std::pair<std::string, std::string>> h;
  const std::string* origin = req.header("origin");
  if (!origin || conf_->cors_origins.empty()) return h;
  bool allowed = false;
  for (auto& o : conf_->cors_origins)
    if (o == "*" || o == *origin) allowed = true;
  if (!allowed) return h;
  h.emplace_back("Access-Control-Allow-Origin", *origin);
  h.emplace_back("Vary", "Origin");
  if (conf_->cors_credentials) h.emplace_back("Access-Control-Allow-Credentials", "true");
  return h;
}

void Server::error(http::Connection& c, const http::Request& req, int code) {
  static const char* messages[] = {"Transport unknown", "Session ID unknown", "Bad handshake method",
                                   "Bad request", "Forbidden", "Unsupported protocol version"};
  if (req.upgrade) {
    // A refused WebSocket upgrade gets a raw answer and the socket is closed.
    std::string msg = messages[code];
    c.send("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-type: text/html\r\nContent-Length: " +
           std::to_string(msg.size()) + "\r\n\r\n" + msg);
    c.close_after_flush();
    return;
  }
  std::string body = "{\"code\":" + std::to_string(code) + ",\"message\":\"" + messages[code] + "\"}";
  c.respond(code == 4 ? 403 : 400, "application/json", body, cors_headers(req));
}

void Server::handle_request(http::Connection& c, http::Request& req) {
  auto cors = cors_headers(req);

  // CORS preflight.
  if (req.method == "OPTIONS" && !cors.empty() && req.header("access-control-request-method")) {
    cors[1].second = "Origin, Access-Control-Request-Headers";
    cors.emplace_back("Access-Control-Allow-Methods", "GET,HEAD,PUT,PATCH,POST,DELETE");
    if (auto* h = req.header("access-control-request-headers")) cors.emplace_back("Access-Control-Allow-Headers", *h);
    c.respond(204, "", "", cors);
    return;
  }

  const std::string* transport = req.query_param("transport");
  Transport t;
  if (transport && *transport == "polling" && conf_->allow_polling) t = Transport::Polling;
  else if (transport && *transport == "websocket" && conf_->allow_websocket) t = Transport::WebSocket;
  else return error(c, req, 0);
  const std::string* eio = req.query_param("EIO");
  if (!eio || *eio != "4") return error(c, req, 5);

  const std::string* sid = req.query_param("sid");
  if (!sid) {
    if (req.method != "GET") return error(c, req, 2);
    if (t == Transport::WebSocket && (!req.upgrade || !valid_websocket_request(req))) return error(c, req, 3);
    return handshake(c, req, t);
  }

  Session* found = sessions_.find(*sid);
  if (!found || (found->closed_ && found->queue_empty())) return error(c, req, 1);
  Session& s = *found;

  if (req.upgrade) {
    if (!valid_websocket_request(req)) return error(c, req, 3);
    // polling -> WebSocket. One that cannot be (already upgraded or
    // upgrading, closed, not a WebSocket) is completed and closed at once, as
    // Engine.IO does: an answer, never a hang-up, and the session untouched.
    if (t != Transport::WebSocket || s.transport_ != Transport::Polling || s.probe() || s.closed_) {
      accept_websocket(c, req);
      c.close_websocket();
      return;
    }
    accept_websocket(c, req);
    c.owner = &s;
    s.poll_->probe = &c;
    s.poll_->upgrade_deadline = timers_.now() + int64_t(conf_->upgrade_timeout);
    s.schedule();
    return;
  }
  if (t != s.transport_) return error(c, req, 3);

  if (req.method == "GET") {
    // (A plain GET naming a WebSocket session is held as before, unanswered.)
    if (!s.poll_) s.poll_ = std::make_unique<Session::Polling>();
    Session::Polling& pl = *s.poll_;
    if (pl.held_get) {
      // Overlapping GETs: refuse this one and end the session.
      c.respond(400, "", "", cors);
      s.close("transport error");
      return;
    }
    pl.held_get = &c;
    s.schedule();  // an upgrade in progress keeps it answered with noops
    pl.get_headers = cors;
    pl.get_encoding.clear();
    if (conf_->http_compression)
      if (const std::string* ae = req.header("accept-encoding")) {
        if (ae->find("gzip") != std::string::npos) pl.get_encoding = "gzip";
        else if (ae->find("deflate") != std::string::npos) pl.get_encoding = "deflate";
      }
    c.owner = &s;
    if (!pl.queue.empty()) {
      s.answer_get();
      s.finish_if_closed();
    }
    return;
  }
  if (req.method == "POST") {
    const std::string* ct = req.header("content-type");
    if (ct && ct->rfind("application/octet-stream", 0) == 0) {
      c.respond(400, "", "", cors);
      s.close("transport error");
      return;
    }
    std::vector<Packet> packets;
    bool ok = decode_payload(req.body, packets);
    auto headers = cors;
    headers.insert(headers.end(), kNoStore.begin(), kNoStore.end());
    c.respond(200, "text/html", "ok", headers);
    for (auto& p : packets) {
      if (s.closed_) break;
      s.on_packet(p);
    }
    if (!ok && !s.closed_) s.close("parse error");
    return;
  }
  c.respond(500, "", "", cors);
}

void Server::handshake(http::Connection& c, http::Request& req, Transport t) {
  Handshake hs;
  hs.address = c.address();
  hs.set_url(req.url);
  // The WebSocket handshake's own headers mean nothing once it is done.
  for (auto& [name, value] : req.headers)
    if (name.rfind("sec-websocket-", 0) != 0) hs.add_header(name, value);
  for (auto& [name, value] : req.query) hs.add_query(name, value);
  hs.shrink();  // kept for the session's life: no slack
  hs.issued_ms = now_ms();
  hs.secure = c.is_tls();
  std::string sid = new_sid();
  auto session = std::make_unique<Session>(*this, sid, t, std::move(hs));
  Session& s = *session;
  sessions_.insert(std::move(session));
  s.handler = factory_(s);
  std::string open = open_packet(t, sid);
  if (t == Transport::Polling) {
    auto headers = cors_headers(req);
    headers.insert(headers.end(), kNoStore.begin(), kNoStore.end());
    c.respond(200, "text/plain; charset=UTF-8", open, headers);
  } else {
    accept_websocket(c, req);
    c.owner = &s;
    s.ws_ = &c;
    c.send_frame(ws::Opcode::Text, open);
  }
}

// RFC 6455 4.2.1: version 13 and a key of 16 base64-encoded bytes.
bool Server::valid_websocket_request(const http::Request& req) const {
  const std::string* version = req.header("sec-websocket-version");
  const std::string* key = req.header("sec-websocket-key");
  const std::string* upgrade = req.header("upgrade");
  std::string raw;
  return version && *version == "13" && key && base64_decode(*key, raw) && raw.size() == 16 && upgrade &&
         strcasecmp(upgrade->c_str(), "websocket") == 0;
}

void Server::accept_websocket(http::Connection& c, const http::Request& req) {
  auto headers = cors_headers(req);
  const std::string* ext = req.header("sec-websocket-extensions");
  // No context takeover either way: frames stay shareable, and no connection
  // holds a compressor or decompressor between messages.
  bool deflate = conf_->websocket_compression && ext && ext->find("permessage-deflate") != std::string::npos;
  if (deflate)
    headers.emplace_back("Sec-WebSocket-Extensions",
                         "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
  c.accept_websocket(req, headers, deflate);
}

void Server::on_ws_message(http::Connection& c, bool binary, std::string_view data) {
  auto* s = static_cast<Session*>(c.owner);
  if (!s || s->closed_) return;
  // A message on the session's WebSocket (the hot path) goes up as the view
  // it came in: binary as it is, text after its type digit.
  http::Connection* probe = s->probe();
  if (&c != probe && (binary || (!data.empty() && data[0] == '4'))) {
    s->on_message(binary, binary ? data : data.substr(1));
    return;
  }
  Packet p;
  if (binary) {
    p.type = PacketType::Message;
    p.binary = true;
    p.data.assign(data);
  } else if (!decode_text(data, p)) {
    if (&c == probe) c.close_websocket();
    else s->close("parse error");
    return;
  }
  if (&c == probe) {
    Session::Polling& pl = *s->poll_;
    // The upgrade: "2probe" -> "3probe", then "5" switches.
    if (p.type == PacketType::Ping && p.data == "probe" && !pl.probed) {
      pl.probed = true;
      c.send_frame(ws::Opcode::Text, "3probe");
      s->send(make_text(PacketType::Noop, ""));  // ends the client's current poll
      pl.next_noop = timers_.now() + 100;
      s->schedule();
    } else if (p.type == PacketType::Upgrade && pl.probed) {
      pl.probe = nullptr;
      s->ws_ = &c;
      metrics::add(s->gauge(), -1);
      s->transport_ = Transport::WebSocket;
      metrics::add(s->gauge(), 1);
      pl.upgrade_deadline = 0;
      if (pl.held_get) {  // a GET still held gets a noop so the client lets it go
        std::vector<OutRef> rest;
        rest.swap(pl.queue);
        pl.queue.push_back(make_text(PacketType::Noop, ""));
        s->answer_get();
        pl.queue = std::move(rest);
      }
      for (auto& q : pl.queue) q->write_frame(c);
      // On WebSocket now: nothing of long-polling is left to keep.
      s->poll_.reset();
      if (s->handler) s->handler->on_upgrade();
    } else {
      pl.probe = nullptr;
      c.owner = nullptr;
      c.close_websocket();
    }
    return;
  }
  s->on_packet(p);
}

void Server::on_connection_closed(http::Connection& c) {
  auto* s = static_cast<Session*>(c.owner);
  c.owner = nullptr;
  if (s) s->detach(c);
}

void Server::remove(Session& s) {
  std::unique_ptr<Session> gone = sessions_.take(s);
  if (!gone) return;
  if (s.held_get()) s.held_get()->owner = nullptr;
  if (s.probe()) s.probe()->owner = nullptr;
  if (s.ws_) s.ws_->owner = nullptr;
  graveyard_.push_back(std::move(gone));
}

// ------------------------------------------------------------ session table

Session* SessionTable::find(std::string_view sid) const {
  if (buckets_.empty()) return nullptr;
  const auto& head = buckets_[std::hash<std::string_view>{}(sid) & (buckets_.size() - 1)];
  for (Session* s = head.get(); s; s = s->next_in_bucket_.get())
    if (s->sid() == sid) return s;
  return nullptr;
}

void SessionTable::insert(std::unique_ptr<Session> s) {
  if (size_ + 1 > buckets_.size()) {  // at most one session per bucket on average
    std::vector<std::unique_ptr<Session>> old(std::max<size_t>(16, buckets_.size() * 2));
    old.swap(buckets_);
    for (auto& head : old)
      while (head) {
        std::unique_ptr<Session> moved = std::move(head);
        head = std::move(moved->next_in_bucket_);
        auto& to = bucket(moved->sid());
        moved->next_in_bucket_ = std::move(to);
        to = std::move(moved);
      }
  }
  auto& head = bucket(s->sid());
  s->next_in_bucket_ = std::move(head);
  head = std::move(s);
  size_++;
}

std::unique_ptr<Session> SessionTable::take(const Session& s) {
  if (buckets_.empty()) return nullptr;
  for (std::unique_ptr<Session>* link = &bucket(s.sid()); *link; link = &(*link)->next_in_bucket_) {
    if (link->get() != &s) continue;
    std::unique_ptr<Session> taken = std::move(*link);
    *link = std::move(taken->next_in_bucket_);
    size_--;
    return taken;
  }
  return nullptr;
}

// The earliest deadline the session's state makes live.
void Session::schedule() {
  int64_t next = 0;
  auto take = [&next](int64_t d) {
    if (d && (!next || d < next)) next = d;
  };
  if (closed_) {
    if (poll_) take(poll_->close_deadline);
  } else {
    take(heartbeat_);
    take(connect_deadline_);
    if (probe()) take(poll_->upgrade_deadline);
    if (probe() && poll_->probed && poll_->held_get) take(poll_->next_noop);
  }
  if (!next) timer_.cancel();
  else if (!timer_.armed() || timer_.deadline() != next) timer_.arm_at(next);
}

// What is due of heartbeats and timeouts (a deadline moved since the timer
// was armed is just not due yet).
void Session::on_timer() {
  int64_t now = server_.timers_.now();
  if (closed_) {
    if (poll_ && poll_->close_deadline && now >= poll_->close_deadline) server_.remove(*this);
    return;
  }
  if (awaiting_pong_ && now >= heartbeat_) {
    close("ping timeout");
    return;
  }
  if (connect_deadline_ && now >= connect_deadline_) {
    close("transport close");
    return;
  }
  if (!awaiting_pong_ && now >= heartbeat_) {
    send(make_text(PacketType::Ping, ""));
    awaiting_pong_ = true;
    heartbeat_ = now + int64_t(ping_timeout_);
  }
  if (probe() && poll_->upgrade_deadline && now >= poll_->upgrade_deadline) {
    http::Connection* probe = poll_->probe;
    poll_->probe = nullptr;
    poll_->probed = false;
    poll_->upgrade_deadline = 0;
    probe->owner = nullptr;
    probe->close();
  } else if (probe() && poll_->probed && poll_->held_get && now >= poll_->next_noop) {
    send(make_text(PacketType::Noop, ""));
    poll_->next_noop = now + 100;
  }
  if (!closed_) schedule();
}

void Server::flush() {
  // A session may close (and be buried) while answering; the list only holds live ones.
  std::vector<Session*> aborts;
  aborts.swap(aborts_);
  for (Session* s : aborts) s->abort("transport error");
  std::vector<Session*> todo;
  todo.swap(poll_flush_);
  for (Session* s : todo) {
    s->answer_get();
    s->finish_if_closed();
  }
  graveyard_.clear();
}

// Long-polling sessions are told first and all at once: each needs new
// requests, which a stopping server may not get through to it for long.
size_t Server::close_polling(std::string_view reason) {
  std::vector<Session*> polling;
  sessions_.for_each([&polling](Session& s) {
    if (!s.closed_ && s.transport_ == Transport::Polling) polling.push_back(&s);
  });
  for (Session* s : polling) s->close(reason);
  return polling.size();
}

size_t Server::close_some(std::string_view reason, size_t n) {
  std::vector<Session*> some;
  size_t open = 0;
  sessions_.for_each([&](Session& s) {
    if (s.closed_) return;
    open++;
    if (some.size() < n) some.push_back(&s);
  });
  for (Session* s : some) s->close(reason);
  return open - some.size();
}

void Server::close_all(std::string_view reason) {
  std::vector<Session*> all;
  sessions_.for_each([&all](Session& s) { all.push_back(&s); });
  for (Session* s : all) s->close(reason);
}

}  // namespace dr::eio
