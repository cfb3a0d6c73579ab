# Optional CUDA: -DLOOM_CUDA=AUTO (default) enables the CUDA language, cuBLAS(Lt) and NCCL when
# nvcc is found (PATH, CUDACXX, or /usr/local/cuda); ON requires them; OFF builds CPU-only.
# Sets LOOM_WITH_CUDA and, when on, the imported target Loom::nccl.

set(LOOM_WITH_CUDA OFF)
string(TOUPPER "${LOOM_CUDA}" _loom_cuda)
if(NOT _loom_cuda MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "LOOM_CUDA must be AUTO, ON or OFF (got '${LOOM_CUDA}')")
endif()

if(NOT _loom_cuda STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)  # H100 / H200
    endif()
    # CMake 3.25 knows no CUDA20 flags for nvcc; the .cu files are C++17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # NCCL has no CMake config; in the CUDA toolkit image it sits beside cuBLAS.
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib /usr/local/cuda/lib64)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      add_library(loom_nccl INTERFACE)
      target_include_directories(loom_nccl SYSTEM INTERFACE "${NCCL_INCLUDE_DIR}")
      target_link_libraries(loom_nccl INTERFACE "${NCCL_LIBRARY}")
      add_library(Loom::nccl ALIAS loom_nccl)
      set(LOOM_WITH_CUDA ON)
    elseif(_loom_cuda STREQUAL "ON")
      message(FATAL_ERROR "LOOM_CUDA=ON but NCCL was not found (nccl.h / libnccl)")
    else()
      message(STATUS "Loom: nvcc found but NCCL not: building CPU-only")
    endif()
  elseif(_loom_cuda STREQUAL "ON")
    message(FATAL_ERROR "LOOM_CUDA=ON but no CUDA compiler was found; install the CUDA toolkit or set CUDACXX")
  endif()
endif()

if(LOOM_WITH_CUDA)
  message(STATUS "Loom: CUDA ${CMAKE_CUDA_COMPILER_VERSION} (arch ${CMAKE_CUDA_ARCHITECTURES}), NCCL ${NCCL_LIBRARY}")
else()
  message(STATUS "Loom: CPU-only build")
endif()
