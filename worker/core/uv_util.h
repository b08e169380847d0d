// Ownership of libuv handles: a handle's memory may only be freed in its close
// callback, so owners hand it to close_handle() instead of deleting it.
#pragma once

#include <uv.h>

#include <memory>

namespace dr {

template <class T>
std::unique_ptr<T> make_handle() {
  auto h = std::make_unique<T>();
  h->data = nullptr;
  return h;
}

// Closes the handle; its memory goes when libuv is done with it.
template <class T>
void close_handle(std::unique_ptr<T> h) {
  if (!h) return;
  T* raw = h.release();
  uv_close(reinterpret_cast<uv_handle_t*>(raw),
           [](uv_handle_t* p) { std::unique_ptr<T> owned(reinterpret_cast<T*>(p)); });
}

// Owner for a handle member: closes it when the owner goes away.
template <class T>
struct UvHandle {
  std::unique_ptr<T> h = make_handle<T>();
  ~UvHandle() {
    if (h && initialized) close_handle(std::move(h));
  }
  T* get() { return h.get(); }
  bool initialized = false;
};

int64_t now_ms();  // wall clock, ms since the epoch

}  // namespace dr
