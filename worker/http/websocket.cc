#include "http/websocket.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>


namespace dr::ws {

void frame_to(Opcode op, std::string_view payload, std::string& out) {
  size_t n = payload.size();
  out.push_back(char(0x80 | uint8_t(op)));  // FIN + opcode
  if (n < 126) {
    out.push_back(char(n));
  } else if (n < 65536) {
    out.push_back(char(126));
    out.push_back(char(n >> 8));
    out.push_back(char(n & 0xff));
  } else {
    out.push_back(char(127));
    for (int i = 7; i >= 0; i--) out.push_back(char((uint64_t(n) >> (8 * i)) & 0xff));
  }
  out.append(payload);
}

std::string frame(Opcode op, std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 10);
  frame_to(op, payload, out);
  return out;
}

std::string close_frame(uint16_t code) {
  char body[2] = {char(code >> 8), char(code & 0xff)};
  return frame(Opcode::Close, std::string_view(body, 2));
}

std::string accept_key(std::string_view client_key) {
  std::string s(client_key);
  s += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  unsigned char b64[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];  // EVP_EncodeBlock adds a NUL
  const int n = EVP_EncodeBlock(b64, digest, sizeof digest);
  return std::string(reinterpret_cast<char*>(b64), n);
}

Reader::Reader(uint64_t max_message, bool allow_compressed, Callbacks cb)
    : max_message_(max_message), allow_compressed_(allow_compressed), cb_(std::move(cb)) {}

std::string deflated_frame(Opcode op, std::string_view deflated_payload) {
  std::string f = frame(op, deflated_payload);
  f[0] = char(uint8_t(f[0]) | 0x40);  // RSV1: "this message is compressed"
  return f;
}
Reader::~Reader() = default;

// Walks the complete frames buffered so far. Returns the end of the last
// complete frame that ends a message (so wslay can be dropped after it), or
// the end of the last complete frame when inside a fragmented message. A
// header that can never be valid sets `fatal`; what came before it is still
// returned, so it is read as it would be had TCP cut the stream there.
size_t Reader::scan(bool& fatal) {
  size_t pos = 0, usable = 0;
  bool fragmented = in_fragmented_;
  const auto* p = reinterpret_cast<const uint8_t*>(in_.data());
  while (in_.size() - pos >= 2) {
    uint8_t b0 = p[pos], b1 = p[pos + 1];
    bool fin = b0 & 0x80;
    uint8_t op = b0 & 0x0f;
    uint64_t len = b1 & 0x7f;
    size_t hdr = 2;
    if (len == 126) {
      if (in_.size() - pos < 4) break;
      len = (uint64_t(p[pos + 2]) << 8) | p[pos + 3];
      hdr = 4;
    } else if (len == 127) {
      if (in_.size() - pos < 10) break;
      len = 0;
      for (int i = 0; i < 8; i++) len = (len << 8) | p[pos + 2 + i];
      hdr = 10;
    }
    // Refuse what wslay would refuse, from the first two bytes, rather than
    // buffering a frame that can never be valid (e.g. an HTTP request).
    bool reserved_op = (op >= 3 && op <= 7) || op >= 11;
    bool bad_rsv = (b0 & 0x30) || ((b0 & 0x40) && !allow_compressed_);
    bool control = op >= 8;
    if (reserved_op || bad_rsv || !(b1 & 0x80) || (control && (!fin || len > 125))) {
      fatal_code_ = 1002;
      fatal = true;
      break;
    }
    hdr += 4;  // client frames are masked
    if (len > max_message_ + 125) {
      fatal_code_ = 1009;
      fatal = true;
      break;
    }
    // TCP may split anywhere, the mask key included: wait for the whole header.
    size_t have = in_.size() - pos;
    if (have < hdr || have - hdr < len) break;
    // wslay answers a close (the client's, or an error's) before anything
    // queued and then sends nothing: a ping ends a batch, so that its pong
    // leaves before what follows is read, and a close starts one.
    if (op == 8 && pos > 0) break;
    pos += hdr + len;
    if (op < 8) fragmented = !fin;  // control frames may come between fragments
    if (!fragmented) usable = pos;
    if (op == 9) break;
  }
  // Inside a fragmented message wslay keeps state: hand it every whole frame.
  if (fragmented) usable = pos;
  in_fragmented_ = fragmented;
  return usable;
}

bool Reader::feed(std::string_view bytes) {
  if (closed_) return false;
  in_.append(bytes);
  bool fatal = false;
  size_t usable = scan(fatal);
  while (usable > 0) {
    size_t before = in_.size();
    if (!read_frames(usable)) return false;
    if (fatal || in_.size() == before) break;
    usable = scan(fatal);  // the close that ended the batch before, and what follows
  }
  if (fatal) {
    // Found by the scan: the close frame is ours to send (wslay sends its own
    // for what it finds).
    closed_ = true;
    cb_.send(close_frame(fatal_code_));
    cb_.on_close(fatal_code_);
    return false;
  }
  return true;
}

// Hands wslay the first `usable` bytes (whole frames); false once closed.
bool Reader::read_frames(size_t usable) {
  if (!ctx_) {
    static const wslay_event_callbacks callbacks = {
        // recv: hand wslay the buffered frames
        [](wslay_event_context_ptr ctx, uint8_t* buf, size_t len, int, void* user) -> ssize_t {
          auto* r = static_cast<Reader*>(user);
          size_t n = std::min(len, r->feed_end_ - r->feed_pos_);
          if (n == 0) {
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
          }
          memcpy(buf, r->in_.data() + r->feed_pos_, n);
          r->feed_pos_ += n;
          return ssize_t(n);
        },
        // send: control frames (pong, close) go to the connection's output
        [](wslay_event_context_ptr, const uint8_t* data, size_t len, int, void* user) -> ssize_t {
          static_cast<Reader*>(user)->cb_.send(std::string_view(reinterpret_cast<const char*>(data), len));
          return ssize_t(len);
        },
        nullptr,  // genmask: servers do not mask
        nullptr, nullptr, nullptr,
        // on_msg_recv
        [](wslay_event_context_ptr, const wslay_event_on_msg_recv_arg* arg, void* user) {
          auto* r = static_cast<Reader*>(user);
          if (r->closed_) return;
          std::string_view data(reinterpret_cast<const char*>(arg->msg), arg->msg_length);
          if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
            r->cb_.on_message(arg->opcode == WSLAY_BINARY_FRAME, wslay_get_rsv1(arg->rsv), data);
          } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
            r->closed_ = true;
            r->cb_.on_close(arg->status_code ? arg->status_code : 1005);
          }
        },
    };
    wslay_event_context* c = nullptr;
    if (wslay_event_context_server_init(&c, &callbacks, this) != 0) {
      closed_ = true;
      cb_.on_close(1011);
      return false;
    }
    ctx_.reset(c);
    wslay_event_config_set_max_recv_msg_length(c, max_message_);
    if (allow_compressed_) wslay_event_config_set_allowed_rsv_bits(c, WSLAY_RSV1_BIT);
  }
  feed_pos_ = 0;
  feed_end_ = usable;
  int rc = wslay_event_recv(ctx_.get());
  // Pongs, the answer to a close, or the close frame of a protocol error;
  // none once the connection stopped us (it sends its own close frame).
  if (!stopped_) wslay_event_send(ctx_.get());
  in_.erase(0, feed_pos_);
  if (in_.empty()) std::string().swap(in_);  // idle connections keep no read buffer
  feed_pos_ = feed_end_ = 0;
  if (closed_) return false;
  if (rc != 0 || !wslay_event_want_read(ctx_.get())) {
    // Protocol error or message too big: wslay queued a close frame (sent above).
    closed_ = true;
    cb_.on_close(rc == WSLAY_ERR_NOMEM ? 1011 : 1002);
    return false;
  }
  if (!in_fragmented_) ctx_.reset();  // at a message boundary: drop wslay's buffers
  return true;
}

}  // namespace dr::ws
