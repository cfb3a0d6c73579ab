#!/usr/bin/python3
"""loom_client's reading of the coordinator's INVALID_ARGUMENT messages (common/plan_error.cc's
format) into PlanError: source, line and column stripped, field paths with indices and quoted map
keys, hints split off, errors about the whole text with an empty path. No coordinator needed.

    /usr/bin/python3 tests/python/errors_test.py
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "python"))
try:
    import grpc
    from loom_client import LoomError, PlanError
    from loom_client.errors import parse_plan_errors
except ImportError as e:
    print(f"SKIP: {e}: install python3-grpcio, python3-protobuf and python3-yaml (scripts/setup)")
    sys.exit(77)


class ParsePlanErrorsTest(unittest.TestCase):
    def test_every_line_becomes_an_error_with_its_path_and_place(self):
        message = ("3 errors in /p/plan.yaml:\n"
                   "/p/plan.yaml:31:7: stages[1].batch_ramp[2].at_tokens: 500000 is not after the previous "
                   "entry (800000) (hint: at_tokens must increase)\n"
                   '/p/plan.yaml:12:5: stages[0].data_mix[0].weights["odd key"]: -1 is negative\n'
                   "/p/plan.yaml: model.layers: is 0\n")
        errors = parse_plan_errors(message, "/p/plan.yaml")
        self.assertEqual(errors, [
            PlanError("stages[1].batch_ramp[2].at_tokens", "500000 is not after the previous entry (800000)",
                      "at_tokens must increase", 31, 7),
            PlanError('stages[0].data_mix[0].weights["odd key"]', "-1 is negative", "", 12, 5),
            PlanError("model.layers", "is 0", "", 0, 0),
        ])

    def test_an_error_about_the_whole_text_has_no_path(self):
        errors = parse_plan_errors("1 error in <dict>:\n<dict>:1:7: not valid YAML: end of map not found "
                                   "(hint: check indentation and quoting here)\n", "<dict>")
        self.assertEqual(errors, [PlanError("", "not valid YAML: end of map not found",
                                            "check indentation and quoting here", 1, 7)])

    def test_other_messages_are_not_plan_errors(self):
        self.assertEqual(parse_plan_errors("SubmitPlanRequest: set either `plan` or `plan_yaml`, not both", "x"),
                         [])

    def test_loom_error_carries_the_first_path(self):
        e = LoomError(grpc.StatusCode.INVALID_ARGUMENT, "m", [PlanError("stages[0].tokens", "bad")], "submit")
        self.assertEqual(e.field_path, "stages[0].tokens")
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("submit: INVALID_ARGUMENT: m", str(e))
        self.assertEqual(LoomError(grpc.StatusCode.NOT_FOUND, "no plan x-1").field_path, "")


if __name__ == "__main__":
    unittest.main(verbosity=2)
