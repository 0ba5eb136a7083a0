# `pyinfra -y inventories/lab.py deploy.py --group-data group_data/hub`: the lab's two tiny
# models from the lab's hub mirror (`llmhost lab up --mirror`), each pinned to the commit the
# mirror serves, downloaded on the guest by the deploy's hub jobs instead of pushed from here.
from llmhost_lab.mirror import ENDPOINT as _ENDPOINT
from llmhost_lab.mirror import hub_model as _hub_model

llmhost_hf_endpoint = _ENDPOINT
llmhost_service_overrides = {
    "coder": {"model": _hub_model("tiny-coder")},
    "general": {"model": _hub_model("tiny-general")},
}
