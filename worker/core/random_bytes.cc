#include "core/random_bytes.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace dr {
namespace {

void forget_pool_in_child();
std::once_flag atfork_once;

struct Pool {
  static constexpr size_t kSize = 4096;
  uint8_t bytes[kSize];
  size_t left = 0;  // unused bytes, at the end of `bytes`

  void refill() {
    std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, forget_pool_in_child); });
    if (RAND_bytes(bytes, int(kSize)) != 1) abort();
    left = kSize;
  }
  ~Pool() { OPENSSL_cleanse(bytes, kSize); }
};

thread_local Pool pool;

// The child of fork() continues in the forking thread only: emptying that
// thread's pool is enough for the child to draw fresh bytes.
void forget_pool_in_child() {
  OPENSSL_cleanse(pool.bytes, Pool::kSize);
  pool.left = 0;
}

}  // namespace

void random_bytes(uint8_t* out, size_t n) {
  while (n > 0) {
    if (pool.left == 0) pool.refill();
    size_t take = n < pool.left ? n : pool.left;
    memcpy(out, pool.bytes + (Pool::kSize - pool.left), take);
    pool.left -= take;
    out += take;
    n -= take;
  }
}

}  // namespace dr
