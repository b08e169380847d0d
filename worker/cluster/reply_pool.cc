#include "cluster/reply_pool.h"

#include <hiredis/hiredis.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace dr::cluster {
namespace {

// Size classes of 64 B .. 4 KB (with the header); larger blocks are malloc'd
// and freed every time.
constexpr size_t kClasses = 7;
constexpr size_t kSmallest = 64;
constexpr uint32_t kUnpooled = kClasses;
// Enough for the largest reply seen at once (a long XRANGE or a resubscribe's
// confirmations go back to malloc beyond it).
constexpr size_t kKeptPerClass = 128;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kKeep = false;  // every block freed: AddressSanitizer sees a use after free
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kKeep = false;
#else
constexpr bool kKeep = true;
#endif
#else
constexpr bool kKeep = true;
#endif

struct alignas(16) Header {
  uint32_t cls;
};
struct FreeBlock {
  FreeBlock* next;
};

// Trivially destructible: a reply freed late in a thread's exit still finds it.
struct Pool {
  FreeBlock* head[kClasses] = {};
  size_t kept[kClasses] = {};
};
thread_local Pool t_pool;

uint32_t class_of(size_t bytes) {
  size_t size = kSmallest;
  for (uint32_t c = 0; c < kClasses; c++, size *= 2)
    if (bytes <= size) return c;
  return kUnpooled;
}

// `n` usable bytes (zeroed: hiredis' own are calloc'd).
void* take(size_t n) {
  const size_t whole = sizeof(Header) + n;
  const uint32_t cls = class_of(whole);
  void* block = nullptr;
  if (cls != kUnpooled && t_pool.head[cls]) {
    FreeBlock* b = t_pool.head[cls];
    t_pool.head[cls] = b->next;
    t_pool.kept[cls]--;
    block = b;
  } else {
    block = std::malloc(cls == kUnpooled ? whole : kSmallest << cls);
    if (!block) return nullptr;
  }
  auto* h = new (block) Header{cls};
  void* p = h + 1;
  std::memset(p, 0, n);
  return p;
}

void give_back(void* p) {
  if (!p) return;
  Header* h = static_cast<Header*>(p) - 1;
  const uint32_t cls = h->cls;
  if (!kKeep || cls == kUnpooled || t_pool.kept[cls] >= kKeptPerClass) {
    std::free(h);
    return;
  }
  auto* b = reinterpret_cast<FreeBlock*>(h);
  b->next = t_pool.head[cls];
  t_pool.head[cls] = b;
  t_pool.kept[cls]++;
}

redisReply* new_reply(const redisReadTask* task, int type, size_t extra) {
  auto* r = static_cast<redisReply*>(take(sizeof(redisReply) + extra));
  if (!r) return nullptr;
  r->type = type;
  if (task->parent) {
    auto* parent = static_cast<redisReply*>(task->parent->obj);
    parent->element[task->idx] = r;
  }
  return r;
}

void free_reply(void* reply) {
  auto* r = static_cast<redisReply*>(reply);
  if (!r) return;
  if (r->type == REDIS_REPLY_ARRAY && r->element) {
    for (size_t i = 0; i < r->elements; i++) free_reply(r->element[i]);
    give_back(r->element);
  }
  give_back(r);  // a string is in the same block
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
  redisReply* r = new_reply(task, task->type, len + 1);
  if (!r) return nullptr;
  r->str = reinterpret_cast<char*>(r + 1);
  std::memcpy(r->str, str, len);
  r->len = len;
  return r;
}

void* create_array(const redisReadTask* task, int elements) {
  redisReply* r = new_reply(task, REDIS_REPLY_ARRAY, 0);
  if (!r) return nullptr;
  if (elements > 0) {
    r->element = static_cast<redisReply**>(take(sizeof(redisReply*) * size_t(elements)));
    if (!r->element) {
      if (task->parent) static_cast<redisReply*>(task->parent->obj)->element[task->idx] = nullptr;
      give_back(r);
      return nullptr;
    }
  }
  r->elements = size_t(elements > 0 ? elements : 0);
  return r;
}

void* create_integer(const redisReadTask* task, long long value) {
  redisReply* r = new_reply(task, REDIS_REPLY_INTEGER, 0);
  if (r) r->integer = value;
  return r;
}

void* create_nil(const redisReadTask* task) { return new_reply(task, REDIS_REPLY_NIL, 0); }

redisReplyObjectFunctions g_functions = {create_string, create_array, create_integer, create_nil, free_reply};

}  // namespace

redisReplyObjectFunctions* pooled_replies() { return &g_functions; }

size_t pooled_reply_blocks() {
  size_t n = 0;
  for (size_t k : t_pool.kept) n += k;
  return n;
}

}  // namespace dr::cluster
