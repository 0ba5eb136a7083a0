"""The rebuild after a host is lost: every worker's guest is the rebuild of a first one, lost
once its deploy had put the models on the model store (a disk that outlives the host;
conftest.py), and its first converge (test_converge.py) must not send them again. (A change to
one service restarting only it is the sweep drill's, test_bench.py: two vLLM starts less.)"""

from __future__ import annotations

from pathlib import Path

from drills import changed, uploads
from lab_guest import (
    LAYOUT,
    MODEL_STORE,
    FreshConverge,
    LostGuest,
)

SPECS = LAYOUT.settings.services


def test_the_lost_guest_sent_the_models_whole(lost_guest: LostGuest) -> None:
    sent = uploads(lost_guest.output, LAYOUT.settings.model_dir)
    for svc in SPECS:
        source = Path(svc.model.path or "")
        want = {
            f"{LAYOUT.model_dir(svc)}/{f.relative_to(source)}": f.stat().st_size
            for f in source.rglob("*")
            if f.is_file()
        }
        assert {k: v for k, v in sent.items() if k in want} == want, (svc.name, sent)
    assert lost_guest.store, f"the model store {MODEL_STORE} is empty after the lost guest"


def test_rebuilt_guest_converges_without_sending_the_models_again(
    lost_guest: LostGuest, fresh_converge: FreshConverge
) -> None:
    run = fresh_converge.first
    assert run.returncode == 0, run.output[-5000:]
    again = [op for op in changed(run.output) if op.startswith("Model for")]
    assert again == [], f"models transferred again: {again}"
    sent = uploads(run.output, LAYOUT.settings.model_dir)
    assert sent == {}, f"model files sent again: {sent}"
    assert fresh_converge.store == lost_guest.store, "the model store was rewritten"
    print(
        f"\ndrill rebuild: model bytes re-transferred: {sum(sent.values())} (the wheelhouse, "
        f"for comparison: {sum(uploads(run.output, LAYOUT.wheelhouse or '').values())} bytes "
        "sent again)"
    )
