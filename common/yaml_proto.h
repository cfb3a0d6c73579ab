// Reads a YAML (or JSON) document into a protobuf message by walking the message's descriptor.
//
// Why not protobuf's JSON parser: plans are written by people, so Loom needs field paths in every
// error, line numbers, "did you mean" for misspelt keys, and human units for counts (`2M`).
// Rules: a message is a mapping of field names (snake_case, or the JSON camelCase name); a
// repeated field is a sequence; a map field is a mapping; integers accept ParseCount units; enums
// accept their display names (see proto_names.h). Unknown and repeated keys are errors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <yaml-cpp/yaml.h>

#include "common/plan_error.h"

namespace loom {

struct SourceLocation {
  int line = 0;    // 1-based
  int column = 0;  // 1-based
};

class YamlProtoReader {
 public:
  // Fills `message` (which should be empty) from `node`; problems are added to errors().
  void Read(const YAML::Node& node, google::protobuf::Message* message);

  const std::vector<PlanError>& errors() const { return errors_; }
  // Field path -> where its value was written, for every value read.
  const std::map<std::string, SourceLocation>& locations() const { return locations_; }

 private:
  void ReadMessage(const YAML::Node& node, google::protobuf::Message* message, const std::string& path);
  void ReadField(const YAML::Node& node, google::protobuf::Message* message,
                 const google::protobuf::FieldDescriptor* field, const std::string& path);
  void ReadMap(const YAML::Node& node, google::protobuf::Message* message,
               const google::protobuf::FieldDescriptor* field, const std::string& path);
  // Sets (or, for repeated fields, adds) one scalar value.
  void ReadScalar(const YAML::Node& node, google::protobuf::Message* message,
                  const google::protobuf::FieldDescriptor* field, const std::string& path);
  void AddError(const YAML::Node& node, const std::string& path, std::string message, std::string hint = "");
  void Remember(const YAML::Node& node, const std::string& path);

  std::vector<PlanError> errors_;
  std::map<std::string, SourceLocation> locations_;
};

}  // namespace loom
