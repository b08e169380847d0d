file(GLOB DR_RATELIMIT_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.cc)
dr_module(ratelimit ${DR_RATELIMIT_SOURCES})
# Its files share names (namespace ratelimit); only dr_module_entry is exported.
set_target_properties(ratelimit PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
