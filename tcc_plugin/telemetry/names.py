"""Attribute and metric names.

GenAI names come from ``opentelemetry-semantic-conventions``; what the conventions
lack lives under ``tcc.``.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import http_attributes as _http
from opentelemetry.semconv.attributes import server_attributes as _server

# -- semantic conventions -------------------------------------------------------------
OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
REQUEST_MAX_TOKENS: Final = _gen_ai.GEN_AI_REQUEST_MAX_TOKENS
REQUEST_CHOICE_COUNT: Final = _gen_ai.GEN_AI_REQUEST_CHOICE_COUNT
REQUEST_STREAM: Final = _gen_ai.GEN_AI_REQUEST_STREAM
RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
RESPONSE_TIME_TO_FIRST_CHUNK: Final = _gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
USAGE_REASONING_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
USAGE_CACHE_READ_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
USAGE_CACHE_CREATION_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
TOKEN_TYPE: Final = _gen_ai.GEN_AI_TOKEN_TYPE
INPUT_MESSAGES: Final = _gen_ai.GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES: Final = _gen_ai.GEN_AI_OUTPUT_MESSAGES
ERROR_TYPE: Final = _error.ERROR_TYPE
HTTP_STATUS_CODE: Final = _http.HTTP_RESPONSE_STATUS_CODE
SERVER_ADDRESS: Final = _server.SERVER_ADDRESS
SERVER_PORT: Final = _server.SERVER_PORT

METRIC_TOKEN_USAGE: Final = _gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
METRIC_OPERATION_DURATION: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
METRIC_TIME_TO_FIRST_CHUNK: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK

# Bucket boundaries the GenAI conventions recommend for the client histograms.
TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

# -- tcc extensions ---------------------------------------------------------------------
COST_USD: Final = "tcc.cost.usd"
# The output cap a reservation assumed for a request that set none (the model's maximum).
REQUEST_ASSUMED_MAX_TOKENS: Final = "tcc.request.assumed_max_tokens"
COST_UNKNOWN: Final = "tcc.cost.unknown"
USAGE_CACHE_CREATION_1H_INPUT_TOKENS: Final = "tcc.usage.cache_creation_1h.input_tokens"
USAGE_MISSING: Final = "tcc.usage.missing"
USAGE_ESTIMATED: Final = "tcc.usage.estimated"
USAGE_ESTIMATED_FIELDS: Final = "tcc.usage.estimated_fields"
USAGE_UNREPORTED: Final = "tcc.usage.unreported"
USAGE_ERROR: Final = "tcc.usage.error"  # why a response's usage was rejected
# An extra billed step of a call (Anthropic usage.iterations): tcc.usage.<kind>.<field>
USAGE_STEP_PREFIX: Final = "tcc.usage."
SERVER_TOOL_PREFIX: Final = "tcc.server_tool."
STREAM_ABANDONED: Final = "tcc.stream.abandoned"
BUDGET_NAME: Final = "tcc.budget.name"
BUDGET_OUTCOME: Final = "tcc.budget.outcome"
BUDGET_LIMIT_PREFIX: Final = "tcc.budget.limit."
BUDGET_SPENT_PREFIX: Final = "tcc.budget.spent."
BUDGET_REMAINING_PREFIX: Final = "tcc.budget.remaining."
BUDGET_RESERVED_OUTPUT_TOKENS: Final = "tcc.budget.reserved.output_tokens"
BUDGET_CLAMPED_MAX_TOKENS: Final = "tcc.budget.clamped.max_tokens"
BUDGET_CLAMPED_REASONING_TOKENS: Final = "tcc.budget.clamped.reasoning_tokens"
BUDGET_LIMIT_HIT: Final = "tcc.budget.limit_hit"
RETRY_ATTEMPTS: Final = "tcc.retry.attempts"
RETRY_EVENT: Final = "tcc.retry.attempt"
RETRY_ATTEMPT: Final = "tcc.retry.attempt_number"
RETRY_DECISION: Final = "tcc.retry.decision"
RETRY_REASON: Final = "tcc.retry.reason"
RETRY_ERROR_KIND: Final = "tcc.retry.error_kind"
RETRY_WAIT: Final = "tcc.retry.wait_s"
SAMPLING_PREFIX: Final = "tcc.sampling."
FORCING_PREFIX: Final = "tcc.forcing."
SWEEP_PREFIX: Final = "tcc.sweep."

METRIC_COST: Final = "tcc.client.cost"
METRIC_REASONING_TOKENS: Final = "tcc.client.reasoning_tokens"
METRIC_BUDGET_REFUSALS: Final = "tcc.client.budget.refusals"

# Budget outcomes recorded on a call's span.
OUTCOME_OK: Final = "ok"
OUTCOME_CLAMPED: Final = "clamped"
OUTCOME_REFUSED: Final = "refused"
OUTCOME_NONE: Final = "unbudgeted"
# A call whose provider call(s) were made, charged and recorded by calls begun for it
# (an instrumented client inside an ``@llm_call`` function, ...): a parent span only.
OUTCOME_DELEGATED: Final = "delegated"
NESTED_CALLS: Final = "tcc.call.nested_calls"

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
INSTRUMENTATION_NAME: Final = "tcc_plugin"
