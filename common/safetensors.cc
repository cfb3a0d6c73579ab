#include "common/safetensors.h"

#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/confined_read.h"
#include "common/files.h"

namespace loom {
namespace {

int DtypeBytes(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  int32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 1;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      mantissa &= 0x3ff;
      bits = sign | (static_cast<uint32_t>(exponent + 112) << 23) | (mantissa << 13);
    }
  } else {
    bits = sign | (static_cast<uint32_t>(exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

int64_t SafetensorsFile::Tensor::elements() const {
  for (int64_t d : shape) {
    if (d == 0) return 0;  // before multiplying: other dimensions may be huge
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // fits: Open bounded the product by the file size
  return n;
}

size_t StoredBytes(const TensorToWrite& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return static_cast<size_t>(n) * (t.bf16 ? 2 : 4);
}

namespace {

// The upper 16 bits of the float, rounded to nearest even; a NaN keeps a set mantissa bit.
uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace

std::string EncodeSafetensors(const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const size_t bytes = StoredBytes(t);
    header[t.name] = {
        {"dtype", t.bf16 ? "BF16" : "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t length = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  out += json;
  out.reserve(out.size() + offset);
  for (const TensorToWrite& t : tensors) {
    const size_t bytes = StoredBytes(t);
    if (!t.bf16) {
      out.append(reinterpret_cast<const char*>(t.data), bytes);  // x86 is little-endian
      continue;
    }
    const size_t at = out.size();
    out.resize(at + bytes);
    for (size_t i = 0; i < bytes / 2; ++i) {
      const uint16_t h = ToBf16(t.data[i]);
      out[at + 2 * i] = static_cast<char>(h & 0xff);
      out[at + 2 * i + 1] = static_cast<char>(h >> 8);
    }
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  return WriteFileDurably(path, EncodeSafetensors(tensors, metadata));
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Read(const std::string& path) {
  // Confined to the read roots (a rank's; common/confined_read.h): checked on the opened file.
  absl::StatusOr<std::string> bytes = ReadConfinedFile(path);
  if (!bytes.ok()) return bytes.status();
  return Parse(std::move(*bytes), path);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string bytes, const std::string& name) {
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(name, " is not a valid safetensors file: ", why));
  };
  if (bytes.size() < 8) return bad("shorter than its 8-byte header length");
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i)
    length |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (length > bytes.size() - 8) return bad(absl::StrCat("header length ", length, " exceeds the file size"));
  SafetensorsFile file;
  file.path_ = name;
  file.data_start_ = 8 + length;
  const size_t data_size = bytes.size() - file.data_start_;
  nlohmann::json header;
  try {
    header =
        nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(length));
  } catch (const std::exception& e) {
    return bad(absl::StrCat("header is not JSON (", e.what(), ")"));
  }
  if (!header.is_object()) return bad("header is not a JSON object");
  try {
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          file.metadata_[m.key()] = m.value().get<std::string>();
        continue;
      }
      Tensor t;
      t.dtype = it.value().at("dtype").get<std::string>();
      t.shape = it.value().at("shape").get<std::vector<int64_t>>();
      const auto offsets = it.value().at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2 || offsets[0] > offsets[1] || offsets[1] > data_size) {
        return bad(absl::StrCat("tensor ", it.key(), " has data offsets outside the file"));
      }
      t.begin = offsets[0];
      t.end = offsets[1];
      const int width = DtypeBytes(t.dtype);
      if (width == 0) return bad(absl::StrCat("tensor ", it.key(), " has unknown dtype ", t.dtype));
      // Shapes are untrusted: multiply dimension by dimension, refusing a product that could not
      // fit in the file's data (so elements() * width below never overflows).
      if (t.shape.size() > 16) return bad(absl::StrCat("tensor ", it.key(), " has more than 16 dimensions"));
      const uint64_t max_elements = data_size / static_cast<uint64_t>(width);
      bool has_zero = false;
      for (int64_t d : t.shape) {
        if (d < 0) return bad(absl::StrCat("tensor ", it.key(), " has a negative dimension"));
        has_zero |= d == 0;
      }
      if (!has_zero) {
        uint64_t n = 1;
        for (int64_t d : t.shape) {
          if (static_cast<uint64_t>(d) > max_elements / n) {
            return bad(absl::StrCat("tensor ", it.key(), " of shape ", ShapeString(t.shape),
                                    " has more elements than the file holds"));
          }
          n *= static_cast<uint64_t>(d);
        }
      }
      if (static_cast<uint64_t>(t.elements()) * width != t.end - t.begin) {
        return bad(absl::StrCat("tensor ", it.key(), " of shape ", ShapeString(t.shape), " and dtype ",
                                t.dtype, " has ", t.end - t.begin, " bytes"));
      }
      file.tensors_[it.key()] = std::move(t);
    }
  } catch (const std::exception& e) {
    return bad(absl::StrCat("malformed header entry (", e.what(), ")"));
  }
  file.bytes_ = std::move(bytes);
  return file;
}

absl::Status SafetensorsFile::ReadF32(const std::string& name, const std::vector<int64_t>& expected_shape,
                                      float* out) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat(path_, " has no tensor ", name));
  const Tensor& t = it->second;
  if (t.shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor ", name, " has shape ",
                                                   ShapeString(t.shape), ", expected ",
                                                   ShapeString(expected_shape)));
  }
  const char* src = bytes_.data() + data_start_ + t.begin;
  const int64_t n = t.elements();
  if (t.dtype == "F32") {
    if (n > 0) std::memcpy(out, src, static_cast<size_t>(n) * 4);  // `out` may be null for no elements
  } else if (t.dtype == "BF16") {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(out + i, &bits, 4);
    }
  } else if (t.dtype == "F16") {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = HalfToFloat(h);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor ", name, " has dtype ", t.dtype, "; Loom reads F32, BF16 and F16"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> SafetensorsFile::ReadI32(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat(path_, " has no tensor ", name));
  const Tensor& t = it->second;
  const char* src = bytes_.data() + data_start_ + t.begin;
  std::vector<int32_t> out(static_cast<size_t>(t.elements()));
  if (t.dtype == "I32") {
    if (!out.empty()) std::memcpy(out.data(), src, out.size() * 4);
  } else if (t.dtype == "I64") {
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t v;
      std::memcpy(&v, src + 8 * i, 8);
      out[i] = static_cast<int32_t>(v);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor ", name, " has dtype ", t.dtype, ", not I32/I64"));
  }
  return out;
}

}  // namespace loom
