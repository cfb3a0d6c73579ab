// A 64-byte-aligned, zero-initialised float array that owns its memory.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace loom::engine {

class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(int64_t size) { Resize(size); }
  ~FloatBuffer() { std::free(data_); }
  FloatBuffer(FloatBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  FloatBuffer& operator=(FloatBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;

  // Reallocates (contents are zeroed) when the size changes.
  void Resize(int64_t size) {
    if (size == size_) return;
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    if (size == 0) return;
    const size_t bytes = (static_cast<size_t>(size) * sizeof(float) + 63) / 64 * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    size_ = size;
    Zero();
  }
  void Zero() {
    if (size_ > 0) std::memset(data_, 0, static_cast<size_t>(size_) * sizeof(float));
  }

  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  float* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace loom::engine
