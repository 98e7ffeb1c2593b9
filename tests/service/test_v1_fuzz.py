"""Property-based requests to the /v1 routes (schemathesis strategies from the
served OpenAPI schema, driven by hypothesis), schema-valid and schema-invalid:
whatever the body, the answer is never a 5xx, and every error has OpenAI's shape."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from harness import Service, make_settings


def test_v1_never_answers_5xx(tmp_path, components):
    with Service(make_settings(tmp_path / "store", max_new_tokens=8), components) as svc:
        schema = schemathesis.openapi.from_url(f"{svc.url}/openapi.json").include(path_regex="^/v1/")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models"}
        seen: dict[int, int] = {}
        for operation in operations:
            modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if operation.method.upper() == "POST" else (GenerationMode.POSITIVE,)
            for mode in modes:

                @given(case=operation.as_strategy(mode))
                @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                def check(case):
                    response = case.call(timeout=60)
                    seen[response.status_code] = seen.get(response.status_code, 0) + 1
                    case.validate_response(response, checks=[not_a_server_error])
                    if response.status_code >= 400:
                        error = response.json()["error"]
                        assert set(error) == {"message", "type", "param", "code"} and error["message"], error

                check()
        assert set(seen) <= {200, 400, 404} and seen.get(400, 0) > 0, seen
