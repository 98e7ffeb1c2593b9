import pytest
import torch

from editor_core.models import tiny_model


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def tiny(request):
    """(model, tokenizer) for each tiny family; read-only, shared across tests."""
    torch.manual_seed(0)
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama")
