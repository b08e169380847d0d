depth_realtime_add_module(projects ${CMAKE_CURRENT_LIST_DIR}/projects.cc)
target_link_libraries(projects PRIVATE dr_app)
