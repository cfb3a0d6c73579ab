# Every third-party library Loom uses, found from Debian's packages (scripts/setup installs them).
# Every package comes from Debian (scripts/setup installs them).

find_package(Threads REQUIRED)

# Protocol Buffers: the CMake module (Debian ships no CONFIG package for protobuf 3.21).
find_package(Protobuf REQUIRED)
# gRPC: CONFIG package with gRPC::grpc++, gRPC::grpc++_reflection, gRPC::grpc_cpp_plugin.
find_package(gRPC CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)

# RocksDB: the shared target; the static one drags in compression libraries.
find_package(RocksDB CONFIG REQUIRED)
# prometheus-cpp's config file rejects version requests: no version here.
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)   # nlohmann_json::nlohmann_json
find_package(OpenSSL REQUIRED)                # OpenSSL::Crypto, for SHA-256
find_package(GTest CONFIG REQUIRED)
find_package(benchmark CONFIG REQUIRED)

# Gloo has no CMake config.
find_path(GLOO_INCLUDE_DIR gloo/config.h REQUIRED)
find_library(GLOO_LIBRARY gloo REQUIRED)
add_library(loom_gloo INTERFACE)
target_include_directories(loom_gloo SYSTEM INTERFACE "${GLOO_INCLUDE_DIR}")
target_link_libraries(loom_gloo INTERFACE "${GLOO_LIBRARY}" Threads::Threads)
add_library(Loom::gloo ALIAS loom_gloo)

# OpenBLAS (pthread build): FindBLAS finds the library but not the header.
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(OPENBLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas
  NO_DEFAULT_PATH REQUIRED)
add_library(loom_openblas INTERFACE)
target_include_directories(loom_openblas SYSTEM INTERFACE "${OPENBLAS_INCLUDE_DIR}")
target_link_libraries(loom_openblas INTERFACE ${BLAS_LIBRARIES})
add_library(Loom::openblas ALIAS loom_openblas)

# SentencePiece: pkg-config. Its header redeclares absl::string_view, so it may only be included
# by translation units that include no Abseil or gRPC header (see data/README.md).
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
add_library(Loom::sentencepiece ALIAS PkgConfig::SENTENCEPIECE)

# ICU (libicu-dev): regex and NFC for Hugging Face byte-level BPE tokenizers (data/byte_level_bpe.cc).
find_package(ICU REQUIRED COMPONENTS uc i18n)       # ICU::uc, ICU::i18n
