# Operations tests: the rc.d script, the man pages and the install layout.
# Shell scripts in tests/ops/, registered here; included from
# tests/CMakeLists.txt.  Run them with: ctest -L ops

set(_ops_dir ${CMAKE_CURRENT_SOURCE_DIR}/ops)

add_test(NAME ops.shellcheck COMMAND sh ${_ops_dir}/shellcheck_test.sh ${PROJECT_SOURCE_DIR})
add_test(NAME ops.mandoc_lint COMMAND sh ${_ops_dir}/mandoc_lint_test.sh ${PROJECT_SOURCE_DIR})
add_test(NAME ops.rc_profiles COMMAND sh ${_ops_dir}/rc_profiles_test.sh ${PROJECT_SOURCE_DIR})
add_test(NAME ops.install COMMAND sh ${_ops_dir}/install_test.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})

set_tests_properties(ops.shellcheck ops.mandoc_lint ops.rc_profiles ops.install
                     PROPERTIES LABELS ops TIMEOUT 120)
