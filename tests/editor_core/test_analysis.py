import torch

from editor_core.analysis import gradient_pca, separation
from editor_core.editors import MEND, MENDConfig
from editor_core.models import load_model


def test_separation_is_high_for_separated_clusters_and_low_for_mixed():
    a = torch.randn(20, 2) * 0.1
    b = torch.randn(20, 2) * 0.1 + torch.tensor([5.0, 0.0])
    labels = ["x"] * 20 + ["y"] * 20
    assert separation(torch.cat([a, b]), labels) > 100
    mixed = torch.randn(40, 2)
    assert separation(mixed, labels) < 1


def test_gradient_pca_draws_each_editor(tmp_path):
    model, _ = load_model("tiny-llama", device="cpu")
    for name, instruct in (("ie", True), ("mend", False)):
        MEND.for_model(model, MENDConfig(rank=8, instruct=instruct)).save(tmp_path / f"{name}.safetensors")
    out = tmp_path / "pca.png"
    stats = gradient_pca(editors=[f"ie={tmp_path / 'ie.safetensors'}", f"mend={tmp_path / 'mend.safetensors'}"],
                         model="tiny-llama", n=3, out=out)
    assert out.exists() and set(stats) == {"ie", "mend"}
    assert all(len(s["explained_variance"]) == 2 and s["separation"] >= 0 for s in stats.values())
