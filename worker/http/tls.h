// TLS with OpenSSL for any listener (`listen 443 ssl;`). The connection feeds
// ciphertext through memory BIOs, so the rest of the stack stays unaware of it.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "core/tls_context.h"

namespace dr::tls {

// One TLS session over a byte stream.
class Session {
 public:
  explicit Session(const Context& ctx);
  ~Session();
  bool ok() const { return ssl_ != nullptr; }

  // Ciphertext from the peer; the plaintext it yields goes to `plain`.
  // False on a TLS error or the peer's close_notify.
  bool receive(std::string_view cipher, std::string& plain);
  // Plaintext to send; false while the handshake still has to finish.
  bool send(std::string_view plain);
  // Ciphertext to write to the socket, if any.
  bool take_output(std::string& cipher);
  void shutdown();

  std::string held_plain;  // written before the handshake finished

 private:
  Context ctx_;  // the context must outlive the session, even across a reload
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // owned by ssl_
  BIO* out_ = nullptr;  // owned by ssl_
};

}  // namespace dr::tls
