// The one-screen summary `loom validate` prints for a valid plan: the model, then one line per
// stage (kind, from, tokens, layout, learning rate, batch ramp, sequence lengths) and an indented
// line for its data mix or kind-specific settings.
#pragma once

#include <string>

#include "loom/v1/plan.pb.h"

namespace loom {

// `plan` must be valid (ValidatePlan returned no errors).
std::string SummarizePlan(const loom::v1::TrainingPlan& plan);

// "4 layers, d_model 256, 8 heads (4 kv), ffn 688, vocab 8000, rope 500000, tied".
std::string SummarizeModel(const loom::v1::ModelConfig& model);

}  // namespace loom
