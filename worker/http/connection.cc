#include "http/connection.h"

#include <climits>
#include <cstring>

#include "core/metrics.h"
#include "core/uv_util.h"
#include "http/compress.h"

namespace dr::http {
namespace {

// Request heads and bodies are read into one buffer shared by the whole
// process (one loop per process), then copied only where they must live on.
char g_read_buf[64 * 1024];

// What a write libuv could not finish at once owns until it ends.
struct WriteReq {
  uv_write_t req;
  std::string bytes;
  size_t from = 0;  // what uv_try_write took already
  Connection* conn;
};

// Output buffers between loop turns: a connection holds one only while it
// has bytes queued, and taking one back from here costs no allocation.
class OutputBuffers {
 public:
  static std::string take() {
    auto& f = free_list();
    if (f.empty()) return {};
    std::string s = std::move(f.back());
    f.pop_back();
    return s;
  }
  static void give(std::string& s) {
    auto& f = free_list();
    if (s.capacity() <= kKeepCapacity && f.size() < kKeepCount) {
      s.clear();
      f.push_back(std::move(s));
    }
    std::string().swap(s);
  }

 private:
  // Small buffers only, and few: a burst's large buffers go back to malloc.
  static constexpr size_t kKeepCapacity = 16 * 1024;
  static constexpr size_t kKeepCount = 64;
  static std::vector<std::string>& free_list() {
    static std::vector<std::string> f;
    return f;
  }
};

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string url_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(char(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

void split_url(Request& r) {
  std::string_view url = r.url;
  auto q = url.find('?');
  r.path = url_decode(url.substr(0, q), false);
  r.query.clear();
  if (q == std::string_view::npos) return;
  std::string_view qs = url.substr(q + 1);
  while (!qs.empty()) {
    auto amp = qs.find('&');
    std::string_view part = qs.substr(0, amp);
    if (!part.empty()) {
      auto eq = part.find('=');
      r.query.emplace_back(url_decode(part.substr(0, eq), true),
                           eq == std::string_view::npos ? "" : url_decode(part.substr(eq + 1), true));
    }
    if (amp == std::string_view::npos) break;
    qs.remove_prefix(amp + 1);
  }
}

// The request's URL as far as the bytes read up to an error show it. llhttp
// hands the URL to cb_url in pieces, as TCP cut it (none yet when the error
// is inside it), and the answer must not depend on the cuts.
std::string_view url_so_far(std::string_view raw) {
  size_t i = raw.find_first_not_of("\r\n");  // llhttp skips empty lines between requests
  size_t sp = i == std::string_view::npos ? i : raw.find(' ', i);
  if (sp == std::string_view::npos) return {};
  raw.remove_prefix(sp + 1);
  return raw.substr(0, raw.find_first_of(" \r\n"));
}

// Dotted quad. uv_ip4_name goes through snprintf, which is most of what
// formatting a peer's address costs on every connect.
std::string ipv4_text(in_addr a) {
  const auto* b = reinterpret_cast<const uint8_t*>(&a.s_addr);  // network order
  char out[16];
  size_t n = 0;
  for (int i = 0; i < 4; i++) {
    if (i) out[n++] = '.';
    unsigned v = b[i];
    if (v >= 100) out[n++] = char('0' + v / 100);
    if (v >= 10) out[n++] = char('0' + v / 10 % 10);
    out[n++] = char('0' + v % 10);
  }
  return std::string(out, n);
}

}  // namespace

const char* status_text(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
  }
  return "Unknown";
}

const std::string* Request::header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}
const std::string* Request::query_param(std::string_view name) const {
  for (auto& [k, v] : query)
    if (k == name) return &v;
  return nullptr;
}

Connection::Connection(ConnectionOwner& owner, const Limits& limits, std::unique_ptr<uv_tcp_t> tcp)
    : owner_(owner),
      limits_(limits),
      tcp_(std::move(tcp)),
      ws_(limits.max_ws_message, false, *this) {
  tcp_->data = this;
  metrics::add(metrics::core().http_connections, 1);
}

Connection::HttpState::HttpState(Connection& c)
    : timeout(c.owner_.timers(), [](void* conn) { static_cast<Connection*>(conn)->on_timeout(); }, &c) {}

Connection::~Connection() { metrics::add(metrics::core().http_connections, -1); }

void Connection::start(std::string_view initial) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp_.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    if (ss.ss_family == AF_INET6) {
      char ip[64] = "";
      uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), ip, sizeof ip);
      address_ = ip;
    } else if (ss.ss_family == AF_INET) {
      address_ = ipv4_text(reinterpret_cast<sockaddr_in*>(&ss)->sin_addr);
    }
  }
  uv_tcp_nodelay(tcp_.get(), 1);
  http_ = std::make_unique<HttpState>(*this);
  llhttp_init(&http_->parser, HTTP_REQUEST, settings());
  http_->parser.data = this;
  http_->timeout.arm_in(int64_t(limits_.header_timeout));
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(tcp_.get()),
      [](uv_handle_t*, size_t, uv_buf_t* buf) { *buf = uv_buf_init(g_read_buf, sizeof g_read_buf); }, on_read);
  if (!initial.empty()) on_data(initial);
}

void Connection::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(s->data);
  if (n < 0) {
    c->close();
    return;
  }
  if (n > 0) {
    metrics::add(metrics::core().bytes_received, n);
    std::string_view data(buf->base, size_t(n));
    if (!c->tls_) {
      c->on_data(data);
      return;
    }
    std::string plain;
    bool ok = c->tls_->receive(data, plain);
    if (!plain.empty()) c->on_data(plain);
    if (!c->dirty && !c->closed_) c->owner_.mark_dirty(*c);  // handshake answers, alerts
    if (!ok) c->close_after_flush();
  }
}

void Connection::on_data(std::string_view data) {
  if (closed_) return;
  if (websocket_) {
    if (!close_after_flush_ && !overflowed_) ws_.feed(data);  // on failure the reader's on_close has closed us
    return;
  }
  if (!http_) return;
  http_->in.append(data);
  if (in_request_) {
    // Pipelined bytes wait for the answer; a client may not pile up more.
    if (http_->in.size() > limits_.max_header + limits_.max_body) close();
    return;
  }
  parse();
}

void Connection::parse() {
  if (paused_) return;  // already inside parse(): the loop below picks it up
  paused_ = true;
  while (!closed_ && http_ && !in_request_ && !http_->in.empty()) {
    llhttp_t* p = &http_->parser;
    std::string& in = http_->in;
    llhttp_errno_t err = llhttp_execute(p, in.data(), in.size());
    if (err == HPE_OK) {
      // Everything so far is parsed; keep it (a hand-off needs the raw request).
      // llhttp remembers its position, so give it only new bytes next time.
      http_->consumed.append(in);
      in.clear();
      break;
    }
    if (err == HPE_PAUSED_UPGRADE) {
      // An upgrade the owner refused: the request was reported at its
      // HPE_PAUSED already, llhttp stays here, and what follows is not HTTP.
      close_after_flush();
      break;
    }
    if (err == HPE_PAUSED) {
      size_t used = size_t(llhttp_get_error_pos(p) - in.data());
      in.erase(0, used);
      http_->consumed.clear();
      llhttp_resume(p);
      handle_message_complete();
      if (websocket_) {
        // The handshake request is done with: free it, and what came after
        // it is the reader's.
        std::string rest = std::move(http_->in);
        http_.reset();
        if (!rest.empty()) ws_.feed(rest);
        break;
      }
      continue;
    }
    if (http_->handoff_slot >= 0) {
      std::string raw = std::move(http_->consumed);
      raw.append(in);
      in.clear();
      paused_ = false;
      owner_.hand_off(*this, http_->handoff_slot, std::move(raw));
      return;
    }
    int status = http_->error_status ? http_->error_status : 400;
    fail(status, llhttp_get_error_reason(p) ? llhttp_get_error_reason(p) : "Bad Request");
    break;
  }
  paused_ = false;
}

void Connection::handle_message_complete() {
  in_request_ = true;
  http_->timeout.cancel();
  Request& r = http_->req;
  r.method = llhttp_method_name(llhttp_method_t(http_->parser.method));
  r.keep_alive = llhttp_should_keep_alive(&http_->parser);
  r.upgrade = http_->parser.upgrade;
  split_url(r);
  owner_.on_request(*this, r);
}

void Connection::finish_request() {
  if (!http_) return;
  bool keep = http_->req.keep_alive;
  http_->req = Request();
  http_->header_bytes = 0;
  in_request_ = false;
  if (!keep) {
    close_after_flush();
    return;
  }
  http_->timeout.arm_in(int64_t(limits_.keepalive_timeout));
  if (!http_->in.empty()) parse();
}

void Connection::fail(int status, std::string_view message) {
  if (closed_) return;
  std::string body = std::string(message);
  const char* type = "text/plain";
  // Called by parse() on llhttp's error: this request's bytes up to it are
  // http_->consumed and the start of http_->in.
  std::string raw;
  if (http_) {
    const std::string& in = http_->in;
    const char* at = llhttp_get_error_pos(&http_->parser);
    size_t used = at && at >= in.data() && at <= in.data() + in.size() ? size_t(at - in.data()) : in.size();
    raw = http_->consumed;
    raw.append(in, 0, used);
  }
  std::string_view url = url_so_far(raw);
  if (!url.empty() && url.rfind(limits_.text_errors_path, 0) != 0) {
    // {"error":{"code":"PAYLOAD_TOO_LARGE","message":"Payload Too Large"}}, as the HTTP API answers
    std::string code = status_text(status), text = code;  // "Payload Too Large"
    for (char& ch : code) ch = ch == ' ' ? '_' : char(toupper(static_cast<unsigned char>(ch)));
    for (size_t i = 1; i < text.size(); i++) text[i] = char(tolower(static_cast<unsigned char>(text[i])));
    body = "{\"error\":{\"code\":\"" + code + "\",\"message\":\"" + text + "\"}}";
    type = "application/json";
  }
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) +
                     "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n\r\n";
  send(head + body);
  close_after_flush();
}

void Connection::drain(int64_t grace_ms) {
  draining_ = true;
  if (http_ && !in_request_ && !websocket_ && !owner) http_->timeout.arm_in(grace_ms);
}

void Connection::respond(int status, std::string_view content_type, std::string_view body,
                         const std::vector<std::pair<std::string, std::string>>& headers) {
  if (closed_ || !in_request_) return;
  if (draining_ && http_) http_->req.keep_alive = false;
  bool keep = http_ && http_->req.keep_alive;
  std::string out;
  out.reserve(160 + body.size());
  out.append("HTTP/1.1 ").append(std::to_string(status)).append(" ").append(status_text(status)).append("\r\n");
  for (auto& [k, v] : headers) out.append(k).append(": ").append(v).append("\r\n");
  if (!content_type.empty()) out.append("Content-Type: ").append(content_type).append("\r\n");
  if (status != 204) out.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  if (!keep) out.append("Connection: close\r\n");
  out.append("\r\n").append(body);
  send(std::move(out));
  finish_request();
}

void Connection::accept_websocket(const Request& req, const std::vector<std::pair<std::string, std::string>>& headers,
                                  bool deflate) {
  deflate_ = deflate;
  const std::string* key = req.header("sec-websocket-key");
  std::string out = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  out.append("Sec-WebSocket-Accept: ").append(ws::accept_key(key ? *key : "")).append("\r\n");
  for (auto& [k, v] : headers) out.append(k).append(": ").append(v).append("\r\n");
  out.append("\r\n");
  send(std::move(out));
  in_request_ = false;
  cancel_timeout();
  ws_.configure(limits_.max_ws_message, deflate);  // what holds now (a reload may have changed the limit)
  websocket_ = true;
}

void Connection::on_ws_message(bool binary, bool compressed, std::string_view data) {
  // Once the connection is closing, what came in the same read is not read.
  if (closed_ || close_after_flush_ || overflowed_) return;
  if (!compressed) {
    owner_.on_ws_message(*this, binary, data);
    return;
  }
  std::string plain;
  if (!compress::inflate_message(data, limits_.max_ws_message, plain)) {
    send(ws::close_frame(1009));
    close_after_flush();
    return;
  }
  owner_.on_ws_message(*this, binary, plain);
}

// Counts `n` more bytes against the bound; past it, the connection is closed
// at the next flush.
bool Connection::reserve_output(size_t n) {
  if (closed_ || overflowed_ || n == 0) return false;
  bool pending = out_bytes_ > 0;
  out_bytes_ += n;
  // One answer may be larger than the bound (a long-polling response of a
  // full queue, base64 and headers added); what piles up behind it may not.
  if (pending && out_bytes_ > limits_.max_output) {
    // A client that does not read cannot make the worker hold unbounded memory.
    // The close is posted, as nginx posts events: the sender may be walking a
    // room this client is in, and closing ends sessions, sockets, memberships.
    logf(LogLevel::Info, "client %s: %zu bytes unsent, closing the connection", address_.c_str(), out_bytes_);
    metrics::add(metrics::core().slow_closed_output);
    release_output();
    out_bytes_ = 0;
    overflowed_ = true;
    if (websocket_) ws_.stop();
    if (tcp_) uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
    if (!dirty) owner_.mark_dirty(*this);
    return false;
  }
  if (out_.empty()) {
    std::string buf = OutputBuffers::take();
    out_.swap(buf);
  }
  if (!dirty) owner_.mark_dirty(*this);
  return true;
}

void Connection::release_output() { OutputBuffers::give(out_); }

void Connection::send(std::string_view bytes) {
  if (reserve_output(bytes.size())) out_.append(bytes);
}

void Connection::send_frame(ws::Opcode op, std::string_view payload, bool deflated) {
  size_t at = out_.size();
  if (!reserve_output(payload.size() + ws::frame_header_size(payload.size()))) return;
  ws::frame_to(op, payload, out_);
  if (deflated) out_[at] = char(uint8_t(out_[at]) | 0x40);  // RSV1: "this message is compressed"
}

void Connection::use_tls(const std::shared_ptr<SSL_CTX>& ctx) { tls_ = std::make_unique<tls::Session>(ctx); }

// TLS: the queued plaintext becomes one ciphertext buffer (per connection:
// encryption cannot be shared between recipients).
void Connection::tls_encrypt_output() {
  std::string& held = tls_->held_plain;
  if (!held.empty()) {  // plaintext held back during the handshake goes first
    held.append(out_);
    out_.swap(held);
    std::string().swap(held);
  }
  if (!out_.empty() && !tls_->send(out_)) out_.swap(held);  // handshake not finished: keep it
  out_.clear();
  tls_->take_output(out_);
  if (out_.empty()) release_output();
  out_bytes_ = out_.size() + held.size();
}

void Connection::flush() {
  dirty = false;
  if (closed_) return;
  if (overflowed_) {
    close();  // the posted close of send()
    return;
  }
  if (writing_) return;
  if (tls_) tls_encrypt_output();
  if (out_.empty()) {
    if (close_after_flush_) close();
    return;
  }
  // Written before the loop polls: most writes need no writable event.
  uv_buf_t buf = uv_buf_init(out_.data(), unsigned(out_.size()));
  int written = uv_try_write(reinterpret_cast<uv_stream_t*>(tcp_.get()), &buf, 1);
  if (written == UV_EAGAIN) written = 0;
  if (written < 0) {
    release_output();
    out_bytes_ = 0;
    close();
    return;
  }
  metrics::add(metrics::core().bytes_sent, written);
  out_bytes_ -= size_t(written);
  if (size_t(written) == out_.size()) {
    release_output();
    if (close_after_flush_) close();
    return;
  }
  // The socket is full: libuv writes the rest when it can.
  auto w = std::make_unique<WriteReq>();
  w->bytes.swap(out_);
  w->from = size_t(written);
  w->conn = this;
  buf = uv_buf_init(w->bytes.data() + w->from, unsigned(w->bytes.size() - w->from));
  w->req.data = w.get();
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(tcp_.get()), &buf, 1, [](uv_write_t* req, int status) {
    std::unique_ptr<WriteReq> done(static_cast<WriteReq*>(req->data));
    size_t bytes = done->bytes.size() - done->from;
    if (status == 0) metrics::add(metrics::core().bytes_sent, int64_t(bytes));
    Connection* c = done->conn;
    c->out_bytes_ -= std::min(bytes, c->out_bytes_);
    OutputBuffers::give(done->bytes);
    c->write_done(status);
  });
  if (rc != 0) {
    close();
    return;
  }
  writing_ = true;
  w.release();  // the request owns itself until its callback
}

void Connection::write_done(int status) {
  writing_ = false;
  if (closed_) return;
  if (status < 0) {
    close();
    return;
  }
  if (!out_.empty() || close_after_flush_) {
    if (!dirty) owner_.mark_dirty(*this);
  }
}

void Connection::close_after_flush() {
  if (closed_) return;
  close_after_flush_ = true;
  if (websocket_) ws_.stop();
  uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
  if (!dirty) owner_.mark_dirty(*this);
}

void Connection::close_websocket() {
  if (closed_) return;
  if (websocket_) send(ws::frame(ws::Opcode::Close, ""));
  close_after_flush();
}

void Connection::close() {
  if (closed_) return;
  closed_ = true;
  cancel_timeout();
  owner_.on_closed(*this);
  if (!tcp_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
  if (tls_ && !writing_) tls_encrypt_output();
  if (!writing_ && !out_.empty()) {  // one last try, for error answers
    uv_buf_t buf = uv_buf_init(out_.data(), unsigned(out_.size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(tcp_.get()), &buf, 1);
  }
  release_output();
  if (tls_) std::string().swap(tls_->held_plain);
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_.get()), [](uv_handle_t* h) {
    auto* c = static_cast<Connection*>(h->data);
    c->owner_.destroy(*c);
  });
}

std::unique_ptr<uv_tcp_t> Connection::release_tcp() {
  closed_ = true;
  cancel_timeout();
  owner_.on_closed(*this);
  uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
  tcp_->data = nullptr;
  return std::move(tcp_);
}

void Connection::on_timeout() { close(); }

// ------------------------------------------------------ llhttp callbacks

int Connection::cb_message_begin(llhttp_t* p) {
  auto* c = static_cast<Connection*>(p->data);
  c->http_->timeout.arm_in(int64_t(c->limits_.header_timeout));
  return 0;
}

int Connection::cb_url(llhttp_t* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  c->http_->header_bytes += len;
  if (c->http_->header_bytes > c->limits_.max_header) {
    c->http_->error_status = 414;
    return HPE_USER;
  }
  c->http_->req.url.append(at, len);
  return 0;
}

int Connection::cb_url_complete(llhttp_t* p) {
  auto* c = static_cast<Connection*>(p->data);
  // Only Engine.IO requests on the main listener belong to a session.
  // (A TLS connection cannot change process; the master keeps a client's TLS
  // connections on one worker instead.)
  int slot = c->listener == Listener::Main && !c->tls_ && c->may_hand_off ? c->owner_.owner_slot(c->http_->req.url)
                                                                          : -1;
  if (slot >= 0) {
    c->http_->handoff_slot = slot;
    return HPE_USER;
  }
  return 0;
}

int Connection::cb_header_field(llhttp_t* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  auto& h = *c->http_;
  h.header_bytes += len;
  if (h.header_bytes > c->limits_.max_header || h.req.headers.size() > 100) {
    h.error_status = 431;
    return HPE_USER;
  }
  if (h.field_done) {
    h.field.clear();
    h.field_done = false;
  }
  size_t from = h.field.size();
  h.field.append(at, len);
  for (size_t i = from; i < h.field.size(); i++)  // ASCII only, as tolower() in the C locale
    if (h.field[i] >= 'A' && h.field[i] <= 'Z') h.field[i] = char(h.field[i] - 'A' + 'a');
  return 0;
}

int Connection::cb_header_value(llhttp_t* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  auto& h = *c->http_;
  h.header_bytes += len;
  if (h.header_bytes > c->limits_.max_header) {
    h.error_status = 431;
    return HPE_USER;
  }
  if (!h.field_done) {
    if (h.req.headers.empty()) h.req.headers.reserve(16);  // a browser sends a dozen: no regrowth
    h.req.headers.emplace_back(h.field, std::string());
    h.field_done = true;
  }
  h.req.headers.back().second.append(at, len);
  return 0;
}

int Connection::cb_headers_complete(llhttp_t* p) {
  auto* c = static_cast<Connection*>(p->data);
  c->http_->timeout.arm_in(int64_t(c->limits_.body_timeout));
  if (p->content_length > c->limits_.max_body && p->content_length != ULLONG_MAX) {
    c->http_->error_status = 413;
    return HPE_USER;
  }
  return 0;
}

int Connection::cb_body(llhttp_t* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  auto& body = c->http_->req.body;
  if (body.size() + len > c->limits_.max_body) {
    c->http_->error_status = 413;
    return HPE_USER;
  }
  body.append(at, len);
  return 0;
}

int Connection::cb_message_complete(llhttp_t*) { return HPE_PAUSED; }

const llhttp_settings_t* Connection::settings() {
  static llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = cb_message_begin;
    st.on_url = cb_url;
    st.on_url_complete = cb_url_complete;
    st.on_header_field = cb_header_field;
    st.on_header_value = cb_header_value;
    st.on_headers_complete = cb_headers_complete;
    st.on_body = cb_body;
    st.on_message_complete = cb_message_complete;
    return st;
  }();
  return &s;
}

}  // namespace dr::http
