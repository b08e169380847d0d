# `depth-realtime -t` with one module: the probe built as the daemon was loads;
# built with a layout-changing setting flipped, it is refused and the error
# names the setting and both values. Run by ctest (module.signature).
function(config_test module out_rc out_text)
  file(WRITE ${WORK}/sig.conf "load_module ${module};\nserver {\n    listen 127.0.0.1:1;\n    namespace /;\n}\n")
  execute_process(COMMAND ${DAEMON} -t -c ${WORK}/sig.conf
    RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  set(${out_rc} ${rc} PARENT_SCOPE)
  set(${out_text} "${o}${e}" PARENT_SCOPE)
endfunction()

config_test(${SAME} rc text)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the probe built like the daemon was refused (exit ${rc}):\n${text}")
endif()

foreach(case "CXX11_ABI0;_GLIBCXX_USE_CXX11_ABI=0, this daemon with 1"
              "GLIBCXX_DEBUG;_GLIBCXX_DEBUG=1, this daemon with 0")
  list(GET case 0 var)
  list(GET case 1 expected)
  config_test(${${var}} rc text)
  if(rc EQUAL 0)
    message(FATAL_ERROR "${${var}} was accepted:\n${text}")
  endif()
  string(FIND "${text}" "module \"${${var}}\" was built with ${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "refusal of ${${var}} does not say \"was built with ${expected}\":\n${text}")
  endif()
  message(STATUS "refused as expected: ${text}")
endforeach()
