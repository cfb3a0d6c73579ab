# Small helpers shared by every CMakeLists.txt of Loom.

# Warnings for Loom's own code (not for generated or third-party code).
function(loom_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers>)
endfunction()

# loom_library(name SOURCES ... DEPS ...): a static library rooted at the repository top, so
# includes read "common/plan_io.h".
function(loom_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  loom_warnings(${name})
endfunction()

# loom_test(name [NO_CTEST] SOURCES ... DEPS ... [LABELS ...] [TIMEOUT s]): a GoogleTest binary registered
# with CTest. Label `unit` by default; integration tests say `integration` (and `long` when they
# take minutes) so they can be filtered with `ctest -L` / `-LE`.
function(loom_test name)
  cmake_parse_arguments(ARG "NO_CTEST" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    LOOM_SOURCE_DIR="${PROJECT_SOURCE_DIR}" LOOM_BINARY_DIR="${PROJECT_BINARY_DIR}")
  loom_warnings(${name})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  if(ARG_NO_CTEST)  # the caller registers the binary's cases itself (e.g. one CTest test per case)
    return()
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
  # The unit tests a -DLOOM_SANITIZE=ON build runs (top CMakeLists.txt, tests/sanitize/run).
  if("unit" IN_LIST ARG_LABELS AND NOT "cuda" IN_LIST ARG_LABELS)
    set_property(GLOBAL APPEND PROPERTY LOOM_UNIT_TEST_TARGETS ${name})
  endif()
endfunction()
