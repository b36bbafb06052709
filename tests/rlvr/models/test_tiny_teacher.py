import pytest
import torch
from safetensors.torch import load_file

from rlvr.models.tiny_teacher import build_tiny_teacher

SMALL = dict(steps=3, every=1, batch=4)  # the real build: 800 steps of 64 pairs, progress every 80


@pytest.fixture
def one_thread():
    # Batches of 4 gain nothing from a second thread, and on a busy machine two spin-waiting threads made
    # this test 5x slower (20 s per step).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_an_interrupted_build_resumes_from_its_progress_and_ends_with_the_same_weights(tmp_path, one_thread):
    whole, part = tmp_path / "whole", tmp_path / "part"
    build_tiny_teacher(whole, say=lambda line: None, **SMALL)

    def interrupt(line: str) -> None:
        if line.startswith("tiny-char-teacher: 2/3"):
            raise KeyboardInterrupt  # Ctrl-C just after the second save

    with pytest.raises(KeyboardInterrupt):
        build_tiny_teacher(part, say=interrupt, **SMALL)
    assert (part / "progress.pt").exists()
    said = []
    build_tiny_teacher(part, say=said.append, **SMALL)
    assert said[0] == f"tiny-char-teacher: resuming at step 2/3 from {part / 'progress.pt'}"
    assert said[1].startswith("tiny-char-teacher: 3/3 SFT steps, loss ")
    assert not (part / "progress.pt").exists()  # the cached model holds no build state
    a, b = load_file(whole / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
