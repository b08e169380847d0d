// Shared-memory zones: named anonymous shared mappings the master makes
// before it forks the workers, which inherit them (nginx's shared zones).
// The core's metrics table is one; modules declare theirs in init_master.
//
// The master declares a configuration's zones between begin() and commit():
// a zone declared again with the same name and size is kept, contents and
// all, so a reload keeps counters and limits; one with another size is made
// anew, zero-filled. Zones the committed set no longer names are unmapped in
// the master (workers of the old generation keep their own mapping until they
// exit). abort() drops a refused reload's new zones and keeps the running set.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace dr::zones {

void begin();
// A zone of the declarations under way (made, or kept from the running set).
// False + err when it cannot be mapped or the name is declared with two sizes.
bool declare(std::string_view name, size_t size, std::string& err);
// True when the declarations differ from the running set (names or sizes):
// workers already running cannot see the new zones.
bool changed();
void commit();
void abort();

// A zone of the running set; empty when there is none of that name.
std::span<std::byte> find(std::string_view name);

}  // namespace dr::zones
