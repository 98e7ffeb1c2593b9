"""editor_core/tokens.py: where generation ends, one rule for metrics and the service."""

import copy

from editor_core import metrics
from editor_core.tokens import end_of_text_ids
from service import generation


def test_end_of_text_is_the_tokenizer_eos_and_every_generation_config_eos(tiny_llama):
    model, tok = tiny_llama
    assert end_of_text_ids(model, tok) == {tok.eos_token_id}
    chat = copy.copy(model)
    chat.generation_config = copy.deepcopy(model.generation_config)
    chat.generation_config.eos_token_id = [5, 7]
    assert end_of_text_ids(chat, tok) == {tok.eos_token_id, 5, 7}


def test_metrics_and_generation_share_the_rule():
    assert metrics.end_of_text_ids is generation.end_of_text_ids is end_of_text_ids
