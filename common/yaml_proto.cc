#include "common/yaml_proto.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/proto_names.h"
#include "common/units.h"

namespace loom {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

const char* NodeKind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "a single value";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Undefined:
      return "nothing";
  }
  return "?";
}

std::vector<std::string> FieldNames(const Descriptor* type) {
  std::vector<std::string> names;
  for (int i = 0; i < type->field_count(); ++i) names.push_back(type->field(i)->name());
  return names;
}

std::string TypeHint(const FieldDescriptor* field) {
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
      return "a whole number such as 4096, 2M or 64Ki";
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      return "a number such as 0.1 or 3e-4";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "true or false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return absl::StrCat("one of: ", EnumChoices(field->enum_type()));
    case FieldDescriptor::CPPTYPE_STRING:
      return "a text value";
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return "a mapping of field: value";
  }
  return "";
}

}  // namespace

void YamlProtoReader::Read(const YAML::Node& node, Message* message) { ReadMessage(node, message, ""); }

void YamlProtoReader::AddError(const YAML::Node& node, const std::string& path, std::string message,
                               std::string hint) {
  PlanError error{path, std::move(message), std::move(hint)};
  const YAML::Mark mark = node.Mark();
  if (!mark.is_null()) {
    error.line = mark.line + 1;
    error.column = mark.column + 1;
  }
  errors_.push_back(std::move(error));
}

void YamlProtoReader::Remember(const YAML::Node& node, const std::string& path) {
  const YAML::Mark mark = node.Mark();
  if (!mark.is_null()) locations_[path] = SourceLocation{mark.line + 1, mark.column + 1};
}

void YamlProtoReader::ReadMessage(const YAML::Node& node, Message* message, const std::string& path) {
  Remember(node, path);
  if (node.IsNull()) return;  // `model:` with nothing under it: an empty message.
  if (!node.IsMap()) {
    AddError(node, path, absl::StrCat("expected a mapping of field: value, got ", NodeKind(node)),
             path.empty() ? "a plan is a mapping with keys such as name, model and stages" : "");
    return;
  }
  const Descriptor* type = message->GetDescriptor();
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    // yaml-cpp's iterator yields a temporary pair: copy the (cheap, shared) nodes out of it.
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar()) {
      AddError(key, path, "a key must be a plain name");
      continue;
    }
    const std::string name = key.Scalar();
    const FieldDescriptor* field = type->FindFieldByName(name);
    if (field == nullptr) field = type->FindFieldByCamelcaseName(name);
    const std::string field_path = FieldPath(path, field != nullptr ? field->name() : name);
    if (field == nullptr) {
      std::string hint = DidYouMean(name, FieldNames(type));
      if (hint.empty()) hint = absl::StrCat("fields here: ", absl::StrJoin(FieldNames(type), ", "));
      AddError(key, field_path, absl::StrCat("unknown field '", name, "'"), hint);
      continue;
    }
    if (!seen.insert(field->name()).second) {
      AddError(key, field_path, "is given twice", "keep one of the two");
      continue;
    }
    ReadField(value, message, field, field_path);
  }
}

void YamlProtoReader::ReadField(const YAML::Node& node, Message* message, const FieldDescriptor* field,
                                const std::string& path) {
  if (field->is_map()) {
    ReadMap(node, message, field, path);
    return;
  }
  if (field->is_repeated()) {
    Remember(node, path);
    if (node.IsNull()) return;  // `sets:` with nothing: an empty list.
    if (!node.IsSequence()) {
      AddError(node, path, absl::StrCat("expected a list, got ", NodeKind(node)),
               absl::StrCat("write a YAML list (- item per line, or [a, b]) of ", TypeHint(field)));
      return;
    }
    int index = 0;
    for (const YAML::Node& item : node) {
      const std::string item_path = IndexPath(path, index++);
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        ReadMessage(item, message->GetReflection()->AddMessage(message, field), item_path);
      } else {
        ReadScalar(item, message, field, item_path);
      }
    }
    return;
  }
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    ReadMessage(node, message->GetReflection()->MutableMessage(message, field), path);
    return;
  }
  ReadScalar(node, message, field, path);
}

void YamlProtoReader::ReadMap(const YAML::Node& node, Message* message, const FieldDescriptor* field,
                              const std::string& path) {
  Remember(node, path);
  if (node.IsNull()) return;
  if (!node.IsMap()) {
    AddError(node, path, absl::StrCat("expected a mapping of name: value, got ", NodeKind(node)));
    return;
  }
  const FieldDescriptor* key_field = field->message_type()->map_key();
  const FieldDescriptor* value_field = field->message_type()->map_value();
  if (key_field->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
    AddError(node, path, "maps with non-text keys are not supported in YAML plans");
    return;
  }
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key_node = it->first;
    const YAML::Node value = it->second;
    if (!key_node.IsScalar()) {
      AddError(key_node, path, "a key must be a plain name");
      continue;
    }
    const std::string key = key_node.Scalar();
    const std::string entry_path = KeyPath(path, key);
    if (!seen.insert(key).second) {
      AddError(key_node, entry_path, "is given twice", "keep one of the two");
      continue;
    }
    Message* entry = message->GetReflection()->AddMessage(message, field);
    entry->GetReflection()->SetString(entry, key_field, key);
    if (value_field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      ReadMessage(value, entry->GetReflection()->MutableMessage(entry, value_field), entry_path);
    } else {
      ReadScalar(value, entry, value_field, entry_path);
    }
  }
}

void YamlProtoReader::ReadScalar(const YAML::Node& node, Message* message, const FieldDescriptor* field,
                                 const std::string& path) {
  Remember(node, path);
  if (!node.IsScalar()) {
    AddError(node, path, absl::StrCat("expected ", TypeHint(field), ", got ", NodeKind(node)));
    return;
  }
  const std::string& text = node.Scalar();
  const Reflection* refl = message->GetReflection();
  const bool add = field->is_repeated();
  auto fail = [&](const std::string& why) {
    AddError(node, path, why, absl::StrCat("expected ", TypeHint(field)));
  };
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: {
      absl::StatusOr<int64_t> value = ParseCount(text);
      if (!value.ok()) return fail(std::string(value.status().message()));
      const int64_t v = *value;
      switch (field->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          if (v < INT32_MIN || v > INT32_MAX)
            return fail(absl::StrCat(text, " is out of range for a 32-bit number"));
          add ? refl->AddInt32(message, field, static_cast<int32_t>(v))
              : refl->SetInt32(message, field, static_cast<int32_t>(v));
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          add ? refl->AddInt64(message, field, v) : refl->SetInt64(message, field, v);
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          if (v < 0 || v > UINT32_MAX) return fail(absl::StrCat(text, " is out of range (0 to 4294967295)"));
          add ? refl->AddUInt32(message, field, static_cast<uint32_t>(v))
              : refl->SetUInt32(message, field, static_cast<uint32_t>(v));
          break;
        default:
          if (v < 0) return fail(absl::StrCat(text, " is negative"));
          add ? refl->AddUInt64(message, field, static_cast<uint64_t>(v))
              : refl->SetUInt64(message, field, static_cast<uint64_t>(v));
          break;
      }
      return;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      absl::StatusOr<double> value = ParseReal(text);
      if (!value.ok()) {
        // Allow counts such as 2M where a real is expected.
        absl::StatusOr<int64_t> count = ParseCount(text);
        if (!count.ok()) return fail(std::string(value.status().message()));
        value = static_cast<double>(*count);
      }
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
        add ? refl->AddDouble(message, field, *value) : refl->SetDouble(message, field, *value);
      } else {
        add ? refl->AddFloat(message, field, static_cast<float>(*value))
            : refl->SetFloat(message, field, static_cast<float>(*value));
      }
      return;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      const std::string lower = absl::AsciiStrToLower(text);
      bool v;
      if (lower == "true" || lower == "yes" || lower == "on")
        v = true;
      else if (lower == "false" || lower == "no" || lower == "off")
        v = false;
      else
        return fail(absl::StrCat("'", text, "' is not true or false"));
      add ? refl->AddBool(message, field, v) : refl->SetBool(message, field, v);
      return;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* value = ParseEnumDisplayName(field->enum_type(), text);
      if (value == nullptr) return fail(absl::StrCat("'", text, "' is not a known value"));
      add ? refl->AddEnum(message, field, value) : refl->SetEnum(message, field, value);
      return;
    }
    case FieldDescriptor::CPPTYPE_STRING:
      add ? refl->AddString(message, field, text) : refl->SetString(message, field, text);
      return;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;  // handled by ReadField
  }
}

}  // namespace loom
