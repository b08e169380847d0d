# depth_realtime_add_module(NAME SOURCES...): a loadable depth-realtime module,
# NAME.so, built the way the daemon checks at load time (DR_MODULE_SIGNATURE):
# C++20, hidden visibility (it exports dr_module_entry only), position
# independent, and its calls into the API left undefined: they resolve in the
# daemon when it loads the module. Installed into DEPTH_REALTIME_MODULE_DIR.
# Used in the daemon's own tree and, from the installed package, by
# find_package(depth-realtime).
function(depth_realtime_add_module name)
  if(NOT ARGN)
    message(FATAL_ERROR "depth_realtime_add_module(${name}): no sources")
  endif()
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE depth-realtime::api)
  set_target_properties(${name} PROPERTIES
    PREFIX "" OUTPUT_NAME ${name}
    CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)
  # Undefined symbols are the daemon's: never an error, even with -Wl,-z,defs.
  target_link_options(${name} PRIVATE LINKER:-z,undefs)
  if(DEPTH_REALTIME_MODULE_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${DEPTH_REALTIME_MODULE_OUTPUT_DIRECTORY})
  endif()
  install(TARGETS ${name} LIBRARY DESTINATION ${DEPTH_REALTIME_MODULE_DIR})
endfunction()
