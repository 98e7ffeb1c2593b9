import os

import pytest
import torch

from editor_core.models import tiny_model

# One thread for the tests' own models, as the service processes they start already run (tests/service/process.py).
# The tests' matrices are small, and with torch's default of one thread per core a test waits on threads that
# another process has taken: beside two one-thread benches on this 2-core machine, a tiny-model test of
# test_lifelong_sample.py took 67 s with two threads and 13 s with one, a SmolLM2 test of
# test_smollm2.py 22 s and 20 s (session 24). An OMP_NUM_THREADS given by the caller is kept.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def tiny(request):
    """(model, tokenizer) for each tiny family; read-only, shared across tests."""
    torch.manual_seed(0)
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama")
