# Tests of what the build installs and exports (included from CMakeLists.txt
# when PAGEWISE_BUILD_TESTS is on). Plain builds only: they check linking and
# symbol resolution, which the sanitizer runtimes (intercepting read & co in
# the executable) would blur.
if(NOT PAGEWISE_SANITIZE STREQUAL "")
  return()
endif()

# tests/interpose_test.cc, four ways (see its header).
function(pagewise_interpose_test name)
  add_executable(${name} tests/interpose_test.cc src/testing/test_main.cc)
  target_link_libraries(${name} PRIVATE ${ARGN} GTest::gtest ${CMAKE_DL_LIBS})
endfunction()
pagewise_interpose_test(interpose_static_off pagewise_lib)
pagewise_interpose_test(interpose_shared_off pagewise_shared)
pagewise_interpose_test(interpose_static_on pagewise_lib pagewise_interpose_static)
add_test(NAME interpose.static_off COMMAND interpose_static_off)
add_test(NAME interpose.shared_off COMMAND interpose_shared_off)
add_test(NAME interpose.static_on COMMAND interpose_static_on)
add_test(NAME interpose.preload_on COMMAND interpose_shared_off)
set_tests_properties(interpose.static_off interpose.shared_off PROPERTIES
  ENVIRONMENT "PAGEWISE_EXPECT_INTERPOSERS=0")
set_tests_properties(interpose.static_on PROPERTIES
  ENVIRONMENT "PAGEWISE_EXPECT_INTERPOSERS=1")
set_tests_properties(interpose.preload_on PROPERTIES ENVIRONMENT
  "PAGEWISE_EXPECT_INTERPOSERS=1;LD_PRELOAD=$<TARGET_FILE:pagewise_interpose>")
set_tests_properties(interpose.static_off interpose.shared_off interpose.static_on
  interpose.preload_on PROPERTIES LABELS packaging SKIP_REGULAR_EXPRESSION "PAGEWISE_SKIPPED")

# The shared libraries' exported symbols (no libc name from libpagewise, only
# the API, all versioned; exactly the interposers from libpagewise-interpose).
add_test(NAME packaging.exports
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/exports_test.sh
          $<TARGET_FILE:pagewise_shared> $<TARGET_FILE:pagewise_interpose>)
set_tests_properties(packaging.exports PROPERTIES LABELS packaging)

# The C API from C (tests/capi_test.c), linked with the static and with the
# shared library (the latter also proves every C function is exported).
foreach(kind static shared)
  add_executable(capi_test_${kind} tests/capi_test.c)
  set_target_properties(capi_test_${kind} PROPERTIES C_STANDARD 11 C_EXTENSIONS OFF
                                                      LINKER_LANGUAGE CXX)
  if(kind STREQUAL "static")
    target_link_libraries(capi_test_${kind} PRIVATE pagewise_lib)
  else()
    target_link_libraries(capi_test_${kind} PRIVATE pagewise_shared)
  endif()
  add_test(NAME capi.${kind} COMMAND capi_test_${kind})
  set_tests_properties(capi.${kind} PROPERTIES LABELS packaging SKIP_REGULAR_EXPRESSION "PAGEWISE_SKIPPED")
endforeach()

# Install into a temporary prefix and build and run the examples, a C
# program, a C++ program, the Rust crate and the Python module against it.
add_test(NAME packaging.install
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/install_test.sh ${CMAKE_BINARY_DIR}
          ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(packaging.install PROPERTIES LABELS packaging TIMEOUT 600
  ENVIRONMENT "CC=${CMAKE_C_COMPILER};CXX=${CMAKE_CXX_COMPILER}")
