#include "http/tls.h"

#include <openssl/err.h>

namespace dr::tls {

Session::Session(const Context& ctx) : ctx_(ctx) {
  ssl_ = SSL_new(ctx.get());
  if (!ssl_) return;
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl_, in_, out_);
  SSL_set_accept_state(ssl_);
}

Session::~Session() {
  if (ssl_) SSL_free(ssl_);
}

bool Session::receive(std::string_view cipher, std::string& plain) {
  if (!ssl_) return false;
  BIO_write(in_, cipher.data(), int(cipher.size()));
  char buf[16384];
  for (;;) {
    int n = SSL_read(ssl_, buf, sizeof buf);
    if (n > 0) {
      plain.append(buf, size_t(n));
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
    ERR_clear_error();
    return false;  // a TLS error, or close_notify (SSL_ERROR_ZERO_RETURN)
  }
}

bool Session::send(std::string_view plain) {
  if (!ssl_ || !SSL_is_init_finished(ssl_)) return false;
  size_t written = 0;
  while (written < plain.size()) {
    int n = SSL_write(ssl_, plain.data() + written, int(plain.size() - written));
    if (n <= 0) {
      ERR_clear_error();
      return false;
    }
    written += size_t(n);
  }
  return true;
}

bool Session::take_output(std::string& cipher) {
  size_t pending = BIO_ctrl_pending(out_);
  if (!pending) return false;
  size_t old = cipher.size();
  cipher.resize(old + pending);
  int n = BIO_read(out_, cipher.data() + old, int(pending));
  cipher.resize(old + size_t(n > 0 ? n : 0));
  return n > 0;
}

void Session::shutdown() {
  if (ssl_ && SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);
  ERR_clear_error();
}

}  // namespace dr::tls
