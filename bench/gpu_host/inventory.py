"""The GPU test machine's systemd-nspawn guest (bench/gpu_host/guest.sh), reached from the
machine itself over SSH: ``pyinfra bench/gpu_host/inventory.py deploy.py``.

Its group data is bench/gpu_host/group_data.py (group ``gpu_host``), read here so that pyinfra,
``pytest tests/host --inventory`` and ``llmhost plan|status`` all see the same data.
"""

import os as _os
import runpy as _runpy
from pathlib import Path as _Path

_data = {
    k: v
    for k, v in _runpy.run_path(str(_Path(__file__).with_name("group_data.py"))).items()
    if k.startswith("llmhost_")
}

_address = _Path("/tmp/g/address")

gpu_host = (
    [
        (
            "gpu-guest",
            {
                # A non-loopback address of the machine (guest.sh), else loopback.
                "ssh_hostname": _address.read_text().strip() if _address.exists() else "127.0.0.1",
                "ssh_user": "root",
                "ssh_key": _os.environ.get("GPU_HOST_KEY", "/tmp/guest-key"),
                # The guest's host keys are new at each boot of a fresh machine.
                "ssh_known_hosts_file": "/dev/null",
                "ssh_strict_host_key_checking": "off",
            },
        )
    ],
    _data,
)
