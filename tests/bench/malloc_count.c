/* libdr_malloc_count.so: an LD_PRELOAD heap-allocation counter for `make bench`.
 *
 * Every malloc, calloc, realloc and aligned allocation of the process (and of
 * processes it forks) adds one call and its size to counters kept in a file
 * mapped from $DR_MALLOC_COUNT_DIR/<pid>, so the load generator can read them
 * while the server runs: two reads around a fixed number of messages, divided,
 * give allocations per message. The file holds three uint64: a magic number,
 * calls, bytes. Without DR_MALLOC_COUNT_DIR the library only forwards.
 *
 * glibc's __libc_* entry points are the real allocator: no dlsym, so nothing
 * allocates while the counters are being set up. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);
extern void* __libc_memalign(size_t, size_t);
extern void __libc_free(void*);

struct counters {
  uint64_t magic;
  uint64_t calls;
  uint64_t bytes;
};

static struct counters unmapped; /* before the file is mapped, or without one */
static struct counters* volatile counters = &unmapped;

static void count(size_t n) {
  struct counters* c = counters;
  __atomic_add_fetch(&c->calls, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&c->bytes, n, __ATOMIC_RELAXED);
}

/* Maps a fresh, zeroed counter file for this pid. */
static void map_for_this_process(void) {
  const char* dir = getenv("DR_MALLOC_COUNT_DIR");
  if (!dir || !*dir) {
    counters = &unmapped;
    return;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%d", dir, (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (ftruncate(fd, sizeof(struct counters)) == 0) {
    void* p = mmap(NULL, sizeof(struct counters), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
      struct counters* c = p;
      c->magic = 0x6d616c6c6f63636eULL; /* "malloccn" */
      counters = c;
    }
  }
  close(fd);
}

/* A forked child must not count into its parent's file. */
__attribute__((constructor)) static void setup(void) {
  map_for_this_process();
  pthread_atfork(NULL, NULL, map_for_this_process);
}

void* malloc(size_t n) {
  count(n);
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  count(n * size);
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  count(n);
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
void* memalign(size_t align, size_t n) {
  count(n);
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) {
  count(n);
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, size_t align, size_t n) {
  count(n);
  void* p = __libc_memalign(align, n);
  if (!p) return 12; /* ENOMEM */
  *out = p;
  return 0;
}
