// jansson's memory (json_set_alloc_funcs) from free lists per size class.
//
// Every JSON value, object slot, key and string is a small block of its own,
// and a message's are freed as soon as it is sent: parsing the next event
// takes the same sizes back. Kept per thread, up to a bound per class, the
// blocks are plain malloc blocks (sorted by malloc_usable_size when freed),
// so a block jansson allocated before the install, or one that free() gets
// (json_dumps' text), is handled either way.
#pragma once

#include <cstddef>

namespace dr::json_blocks {

// Once, first thing in main(). Does nothing under AddressSanitizer (so that
// it still sees every use after free).
void install();

// Blocks kept now on this thread's lists (for tests).
size_t kept();

}  // namespace dr::json_blocks
