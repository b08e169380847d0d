dr_module(bench ${CMAKE_CURRENT_LIST_DIR}/bench.cc)
