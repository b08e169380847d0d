// ws::Reader: client frames read with wslay's frame layer, one whole frame at
// a time, with the checks wslay's event layer made (rsv bits, fragment order,
// message size, UTF-8 of text and close frames, close codes) and its answers
// (pong, the close echoed, a close frame per error).
#include <wslay/wslay.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "http/websocket.h"

namespace dr::ws {
namespace {

constexpr uint16_t kProtocolError = 1002;
constexpr uint16_t kInvalidPayload = 1007;
constexpr uint16_t kTooBig = 1009;

// The bytes of the one frame wslay is reading.
struct Source {
  const char* at = nullptr;
  size_t left = 0;
};

ssize_t recv_from_source(uint8_t* buf, size_t len, int, void* user) {
  auto* src = static_cast<Source*>(user);
  size_t n = std::min(len, src->left);
  if (n == 0) return 0;  // wslay's "want read": only after the frame's last byte
  memcpy(buf, src->at, n);
  src->at += n;
  src->left -= n;
  return ssize_t(n);
}

// A frame context with its source. Fed exactly one frame at a time, it is
// back at a frame boundary with an empty buffer after each, so one serves
// every connection of the process.
class FrameContext {
 public:
  FrameContext() { init(); }
  ~FrameContext() { wslay_frame_context_free(ctx_); }
  FrameContext(const FrameContext&) = delete;
  FrameContext& operator=(const FrameContext&) = delete;

  wslay_frame_context* get() { return ctx_; }
  Source& source() { return src_; }
  // After an error wslay stopped inside a frame: start clean.
  void reset() {
    wslay_frame_context_free(ctx_);
    init();
  }

 private:
  void init() {
    static const wslay_frame_callbacks callbacks = {
        [](const uint8_t*, size_t, int, void*) -> ssize_t { return -1; },  // the reader never sends
        recv_from_source,
        [](uint8_t*, size_t, void*) { return -1; },  // servers do not mask
    };
    if (wslay_frame_context_init(&ctx_, &callbacks, &src_) != 0) ctx_ = nullptr;
  }
  wslay_frame_context* ctx_ = nullptr;
  Source src_;
};

// The process's frame context while a frame is read. A message handed up may
// lead to another connection's bytes being read (a pipelined upgrade after a
// long-polling answer) while the first message is still a view of this
// context's buffer: that reader gets a context of its own.
class FrameLease {
 public:
  FrameLease() {
    if (busy_) {
      own_ = std::make_unique<FrameContext>();
      ctx_ = own_.get();
    } else {
      busy_ = true;
      ctx_ = &shared();
    }
  }
  // A frame left before its end (an error) leaves wslay inside it: reset.
  ~FrameLease() {
    if (!done_) ctx_->reset();
    if (!own_) busy_ = false;
  }
  FrameLease(const FrameLease&) = delete;
  FrameLease& operator=(const FrameLease&) = delete;
  FrameContext* operator->() { return ctx_; }
  void frame_read() { done_ = true; }

 private:
  static FrameContext& shared() {
    static thread_local FrameContext ctx;
    return ctx;
  }
  static inline thread_local bool busy_ = false;
  std::unique_ptr<FrameContext> own_;
  FrameContext* ctx_;
  bool done_ = false;
};

// UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF),
// checked byte by byte across frames: refused at the first byte no valid text
// can continue with. The state is the count of continuation bytes still due
// (bits 0-1) and the range the next one must be in (bits 8-15, 16-23).
constexpr uint32_t kUtf8Reject = 0xffffffff;

uint32_t utf8_step(uint32_t state, uint8_t b) {
  if (state == 0) {
    if (b < 0x80) return 0;
    auto due = [](uint32_t n, uint8_t lo, uint8_t hi) { return n | uint32_t(lo) << 8 | uint32_t(hi) << 16; };
    if (b >= 0xc2 && b <= 0xdf) return due(1, 0x80, 0xbf);
    if (b == 0xe0) return due(2, 0xa0, 0xbf);
    if (b == 0xed) return due(2, 0x80, 0x9f);
    if (b >= 0xe1 && b <= 0xef) return due(2, 0x80, 0xbf);
    if (b == 0xf0) return due(3, 0x90, 0xbf);
    if (b == 0xf4) return due(3, 0x80, 0x8f);
    if (b >= 0xf1 && b <= 0xf3) return due(3, 0x80, 0xbf);
    return kUtf8Reject;
  }
  uint8_t lo = uint8_t(state >> 8), hi = uint8_t(state >> 16);
  if (b < lo || b > hi) return kUtf8Reject;
  uint32_t left = (state & 3) - 1;
  return left == 0 ? 0 : left | 0x80u << 8 | 0xbfu << 16;
}

bool utf8_check(uint32_t& state, std::string_view bytes) {
  const char* p = bytes.data();
  const char* end = p + bytes.size();
  while (p < end) {
    // ASCII (most text: JSON, tokens) eight bytes at a time, between characters.
    if (state == 0 && end - p >= 8) {
      uint64_t word;
      memcpy(&word, p, 8);
      if ((word & 0x8080808080808080u) == 0) {
        p += 8;
        continue;
      }
    }
    state = utf8_step(state, uint8_t(*p++));
    if (state == kUtf8Reject) return false;
  }
  return true;
}

bool valid_close_code(uint16_t code) {
  return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 && code != 1006) ||
         (code >= 3000 && code <= 4999);
}

std::string code_bytes(uint16_t code) { return {char(code >> 8), char(code & 0xff)}; }

}  // namespace

Reader::Reader(uint64_t max_message, bool allow_compressed, Sink& sink)
    : sink_(sink), max_message_(max_message), allow_compressed_(allow_compressed) {}

Reader::~Reader() = default;

bool Reader::feed(std::string_view bytes) {
  if (closed_) return false;
  // Usually whole frames: read them where they are, keep only a cut-off tail.
  std::string_view data = bytes;
  if (in_) {
    in_->append(bytes);
    data = *in_;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t pos = 0;
  uint16_t fatal = 0;
  while (data.size() - pos >= 2) {
    uint8_t b0 = p[pos], b1 = p[pos + 1];
    bool fin = b0 & 0x80;
    uint8_t op = b0 & 0x0f;
    uint64_t len = b1 & 0x7f;
    size_t hdr = 2;
    if (len == 126) {
      if (data.size() - pos < 4) break;
      len = (uint64_t(p[pos + 2]) << 8) | p[pos + 3];
      hdr = 4;
    } else if (len == 127) {
      if (data.size() - pos < 10) break;
      len = 0;
      for (int i = 0; i < 8; i++) len = (len << 8) | p[pos + 2 + i];
      hdr = 10;
    }
    // Refused from the header, rather than buffering a frame that can never
    // be valid (e.g. an HTTP request).
    bool reserved_op = (op >= 3 && op <= 7) || op >= 11;
    bool bad_rsv = (b0 & 0x30) || ((b0 & 0x40) && !allow_compressed_);
    bool control = op >= 8;
    if (reserved_op || bad_rsv || !(b1 & 0x80) || (control && (!fin || len > 125))) {
      fatal = kProtocolError;
      break;
    }
    if (len > max_message_ + 125) {
      fatal = kTooBig;
      break;
    }
    hdr += 4;  // client frames are masked
    // TCP may split anywhere, the mask key included: wait for the whole frame.
    size_t have = data.size() - pos;
    if (have < hdr || have - hdr < len) break;
    if (!read_frame(data.substr(pos, hdr + len))) return false;
    pos += hdr + len;
  }
  if (fatal) {
    closed_ = true;
    sink_.ws_send(close_frame(fatal));
    sink_.on_ws_close(fatal);
    return false;
  }
  if (pos == data.size()) {
    in_.reset();  // idle connections keep no read buffer
  } else if (!in_) {
    in_ = std::make_unique<std::string>(data.substr(pos));
  } else {
    in_->erase(0, pos);
  }
  return true;
}

bool Reader::read_frame(std::string_view frame) {
  FrameLease ctx;
  if (!ctx->get()) return fail(code_bytes(1011), 1011);
  ctx->source() = Source{frame.data(), frame.size()};
  bool first = true, whole_message = false;
  uint64_t got = 0;
  for (;;) {
    wslay_frame_iocb io{};
    ssize_t r = wslay_frame_recv(ctx->get(), &io);
    if (r < 0) {
      // The frame layer's own finding (a length not in its shortest form):
      // wslay answered it with a close frame without status.
      return fail({}, kProtocolError);
    }
    std::string_view chunk(reinterpret_cast<const char*>(io.data), io.data_length);
    bool control = wslay_is_ctrl_frame(io.opcode);
    if (first) {
      first = false;
      uint8_t allowed = allow_compressed_ ? WSLAY_RSV1_BIT : 0;
      bool rsv1 = wslay_get_rsv1(io.rsv);
      if ((io.rsv & ~allowed) || (rsv1 && (control || io.opcode == WSLAY_CONTINUATION_FRAME)) || !io.mask)
        return fail(code_bytes(kProtocolError), kProtocolError);
      if (!control) {
        bool starts = io.opcode == WSLAY_TEXT_FRAME || io.opcode == WSLAY_BINARY_FRAME;
        if (msg_opcode_ == 0 ? !starts : io.opcode != WSLAY_CONTINUATION_FRAME)
          return fail(code_bytes(kProtocolError), kProtocolError);
        if (msg_len_ + io.payload_length > max_message_) return fail(code_bytes(kTooBig), kProtocolError);
        if (msg_opcode_ == 0) {
          msg_opcode_ = io.opcode;
          msg_compressed_ = rsv1;
          utf8_ = 0;
          whole_message = io.fin && io.payload_length == chunk.size();
        }
        msg_len_ += io.payload_length;
        if (!whole_message) {
          if (!msg_) msg_ = std::make_unique<std::string>();
          msg_->reserve(size_t(msg_len_));
        }
      } else if (io.payload_length > max_message_) {
        return fail(code_bytes(kTooBig), kProtocolError);
      }
    }
    got += chunk.size();
    if (got == io.payload_length) ctx.frame_read();
    if (control) {
      // At most 125 bytes, given whole to an empty buffer: one chunk.
      return control_frame(io.opcode, chunk);
    }
    // Text is checked as it comes, unless compressed (checked inflated, above).
    if (msg_opcode_ == WSLAY_TEXT_FRAME && !msg_compressed_ && !utf8_check(utf8_, chunk))
      return fail(code_bytes(kInvalidPayload), kProtocolError);
    if (!whole_message) msg_->append(chunk);
    if (got < io.payload_length) continue;
    if (!io.fin) return true;
    if (msg_opcode_ == WSLAY_TEXT_FRAME && utf8_ != 0) return fail(code_bytes(kInvalidPayload), kProtocolError);
    bool binary = msg_opcode_ == WSLAY_BINARY_FRAME, compressed = msg_compressed_;
    if (whole_message) {
      end_message();
      sink_.on_ws_message(binary, compressed, chunk);  // a view of the unmasked bytes
    } else {
      std::unique_ptr<std::string> data = std::move(msg_);
      end_message();
      sink_.on_ws_message(binary, compressed, *data);
    }
    return !closed_;
  }
}

bool Reader::control_frame(uint8_t opcode, std::string_view payload) {
  if (opcode == WSLAY_PING) {
    sink_.ws_send(frame(Opcode::Pong, payload));
    return true;
  }
  if (opcode != WSLAY_CONNECTION_CLOSE) return true;  // a pong
  uint32_t utf8 = 0;
  if (payload.size() > 2 && (!utf8_check(utf8, payload.substr(2)) || utf8 != 0))
    return fail(code_bytes(kInvalidPayload), kProtocolError);
  uint16_t code = 0;
  if (payload.size() >= 2) {
    code = uint16_t(uint8_t(payload[0]) << 8 | uint8_t(payload[1]));
    if (!valid_close_code(code)) return fail(code_bytes(kProtocolError), kProtocolError);
  }
  closed_ = true;
  sink_.on_ws_close(code ? code : 1005);
  // Answered with its own code and reason (nothing for no code); the
  // connection's stop() in on_close does not hold back this answer.
  sink_.ws_send(frame(Opcode::Close, code ? payload : std::string_view()));
  return false;
}

bool Reader::fail(std::string_view close_payload, uint16_t reported) {
  closed_ = true;
  sink_.ws_send(frame(Opcode::Close, close_payload));
  sink_.on_ws_close(reported);
  return false;
}

void Reader::end_message() {
  msg_opcode_ = 0;
  msg_compressed_ = false;
  msg_len_ = 0;
  utf8_ = 0;
  msg_.reset();
}

}  // namespace dr::ws
