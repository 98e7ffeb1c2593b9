"""service/records.py: stored request records decode into EditRecords without the HTTP schema."""

from editor_core.records import EditRecord, Probe
from service.records import DEFAULT_TASK, decode_records
from service.schemas import EditCreate


def test_a_stored_request_decodes_into_edit_records():
    full = EditCreate(prompt="The capital of Peru is", target_new="Quito", subject="Peru", task="zsre",
                      instruction="Replace the capital.", rephrase_prompts=["Peru's capital is"],
                      locality=[{"prompt": "The capital of Chile is", "answer": "Santiago"}],
                      portability=[{"prompt": "Quito lies in", "answer": "Ecuador"}])
    bare = EditCreate(prompt="The sky is", target_new="green")
    stored = [full.model_dump(mode="json"), bare.model_dump(mode="json")]  # what the store keeps
    assert decode_records("e1", stored) == [
        EditRecord(task="zsre", prompt="The capital of Peru is", target_new="Quito", subject="Peru",
                   rephrase_prompts=("Peru's capital is",), locality=(Probe("The capital of Chile is", "Santiago"),),
                   portability=(Probe("Quito lies in", "Ecuador"),), source="e1#0", extra={"instruction": "Replace the capital."}),
        EditRecord(task=DEFAULT_TASK, prompt="The sky is", target_new="green", source="e1#1"),
    ]
