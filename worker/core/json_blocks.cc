#include "core/json_blocks.h"

#include <jansson.h>
#include <malloc.h>

#include <cstdint>
#include <cstdlib>

namespace dr::json_blocks {
namespace {

// glibc's usable sizes: 24, 40, 56, ... (a 16-byte step). Classes up to 264 B
// cover jansson's values, slots and most keys and strings.
constexpr size_t kSmallest = 24;
constexpr size_t kStep = 16;
constexpr size_t kClasses = 16;
constexpr uint32_t kKeptPerClass = 256;

struct FreeBlock {
  FreeBlock* next;
};
// Zero-initialized and trivially destructible: usable in a thread's exit too.
struct Lists {
  FreeBlock* head[kClasses];
  uint32_t kept[kClasses];
};
thread_local Lists t_lists;

void* take(size_t n) {
  const size_t k = n <= kSmallest ? 0 : (n - kSmallest + kStep - 1) / kStep;
  if (k >= kClasses) return std::malloc(n);
  if (FreeBlock* b = t_lists.head[k]) {
    t_lists.head[k] = b->next;
    t_lists.kept[k]--;
    return b;
  }
  return std::malloc(kSmallest + k * kStep);
}

void give_back(void* p) {
  if (!p) return;
  const size_t usable = malloc_usable_size(p);
  const size_t k = usable < kSmallest ? kClasses : (usable - kSmallest) / kStep;  // it serves sizes up to its own
  if (k >= kClasses || t_lists.kept[k] >= kKeptPerClass) {
    std::free(p);
    return;
  }
  auto* b = static_cast<FreeBlock*>(p);
  b->next = t_lists.head[k];
  t_lists.head[k] = b;
  t_lists.kept[k]++;
}

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

void install() {
  if (!kSanitized) json_set_alloc_funcs(take, give_back);
}

size_t kept() {
  size_t n = 0;
  for (uint32_t k : t_lists.kept) n += k;
  return n;
}

}  // namespace dr::json_blocks
