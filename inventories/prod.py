"""One GPU host running the seed's primary stack (data: group_data/all.py, group_data/prod.py).

Point it at your host with LLMHOST_PROD_HOST (an address or an ~/.ssh/config alias), e.g.
``LLMHOST_PROD_HOST=gpu-01.example.internal pyinfra inventories/prod.py deploy.py --dry``.
"""

import os as _os

_address = _os.environ.get("LLMHOST_PROD_HOST")
if not _address:
    raise SystemExit(
        "inventories/prod.py: set LLMHOST_PROD_HOST to the GPU host's address or ssh alias"
    )

prod = [
    (
        "gpu-01",
        {
            "ssh_hostname": _address,
            # Deploys as a sudo-capable admin; the services run as llmhost_user.
            "ssh_user": _os.environ.get("LLMHOST_PROD_USER", "root"),
            "_sudo": _os.environ.get("LLMHOST_PROD_USER", "root") != "root",
        },
    ),
]
