"""bench/rephrase_templates.py: a rephrasing counts as seen only where the training split has its wording."""

from benches import load_bench

from editor_core.records import EditRecord


def _bench():
    return load_bench("rephrase_templates")


def _cf(subject: str, prompt: str, rephrasing: str) -> EditRecord:
    return EditRecord("counterfact", prompt.format(subject), "x", subject, rephrase_prompts=(rephrasing.format(subject),))


def test_wordings_are_counted_with_the_subject_taken_out():
    bench = _bench()
    train = [_cf("Peru", "The capital of {} is", "{}'s capital city is"), _cf("Iowa", "{} is in", "People in {} speak")]
    seen = bench.table(train)
    assert seen == {"The capital of {} is": {"{}'s capital city is"}, "{} is in": {"People in {} speak"}}
    records = [
        _cf("Chile", "The capital of {} is", "{}'s capital city is"),  # seen, with the same question
        _cf("Ohio", "{} is in", "{}'s capital city is"),  # seen, but with another question
        _cf("Mali", "The capital of {} is", "Which city governs {}?"),  # never seen
        EditRecord("zsre", "What is the capital of Chad?", "x", "Chad", rephrase_prompts=("Chad's capital city is",)),  # not counted
    ]
    got = bench.count(records, seen)
    assert got["counterfact_records"] == 3 and got["question_wording_in_train"] == 3
    assert got["rephrasing_wording_in_train"] == 2 and got["rephrasing_wording_paired_with_the_same_question_in_train"] == 1
    assert bench.wording("A question without it", "Peru") is None
