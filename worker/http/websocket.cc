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


}  // namespace dr::ws
