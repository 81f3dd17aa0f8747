# Installs the built seqk into a scratch prefix, then builds and runs a small
# program against it through find_package(seqk) (shared and static) and
# through pkg-config. Run by CTest as `install_consumer`.
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "$ ${ARGN}\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()

run(${CMAKE_COMMAND} --install ${SEQK_BINARY_DIR} --prefix ${prefix})

# 1. CMake package
run(${CMAKE_COMMAND} -S ${SEQK_SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/cmake
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/cmake)
run(${WORK_DIR}/cmake/consumer_shared)
run(${WORK_DIR}/cmake/consumer_static)

# 2. pkg-config
find_program(PKG_CONFIG NAMES pkg-config pkgconf REQUIRED)
file(GLOB pcdir ${prefix}/lib*/pkgconfig)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs seqk OUTPUT_VARIABLE flags
                RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config does not find seqk in ${pcdir}")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
file(GLOB libdir ${prefix}/lib*)
run(${CMAKE_C_COMPILER} ${SEQK_SOURCE_DIR}/tests/install/consumer/consumer.c -o ${WORK_DIR}/pc_consumer
    ${flags} -Wl,-rpath,${libdir} -lm)
run(${WORK_DIR}/pc_consumer)
message(STATUS "install consumer: find_package(seqk) shared+static and pkg-config all work")

# 3. libseqk_mpi, when it was built: find_package(seqk COMPONENTS mpi), two ranks
file(GLOB mpi_targets ${prefix}/lib*/cmake/seqk/seqkMpiTargets.cmake)
if(mpi_targets)
  find_program(MPIEXEC NAMES mpiexec mpirun REQUIRED)
  run(${CMAKE_COMMAND} -S ${SEQK_SOURCE_DIR}/tests/install/consumer_mpi -B ${WORK_DIR}/mpi
      -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER})
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/mpi)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
  set(ENV{OMPI_MCA_btl_vader_single_copy_mechanism} none)
  run(${MPIEXEC} -n 2 --oversubscribe ${WORK_DIR}/mpi/consumer_mpi)
  message(STATUS "install consumer: find_package(seqk COMPONENTS mpi) works")
endif()
