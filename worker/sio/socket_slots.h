// The socket slots modules ask for (dr::socket_slot, module.h): one index per
// name, the same for every module of the process.
#pragma once

#include <cstddef>

namespace dr::sio {

// How many slots were given out: a context index below it is valid.
size_t socket_slot_count();

}  // namespace dr::sio
