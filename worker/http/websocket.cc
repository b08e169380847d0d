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

namespace {

// SHA-1 fetched once and one digest context reused: the one-shot SHA1() of
// OpenSSL 3 looks the algorithm up and allocates a context on every call
// (a quarter of an upgrade's own cost).
struct Sha1 {
  EVP_MD* md = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Sha1() {
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
  }
};

}  // namespace

std::string accept_key(std::string_view client_key) {
  static const char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  thread_local Sha1 sha1;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!sha1.md || !sha1.ctx || !EVP_DigestInit_ex2(sha1.ctx, sha1.md, nullptr) ||
      !EVP_DigestUpdate(sha1.ctx, client_key.data(), client_key.size()) ||
      !EVP_DigestUpdate(sha1.ctx, kGuid, sizeof kGuid - 1) || !EVP_DigestFinal_ex(sha1.ctx, digest, &len))
    return {};  // no SHA-1: the client sees a wrong accept and gives up
  unsigned char b64[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];  // EVP_EncodeBlock adds a NUL
  const int n = EVP_EncodeBlock(b64, digest, int(len));
  return std::string(reinterpret_cast<char*>(b64), n);
}


}  // namespace dr::ws
